"""The normalizing flow `flow`, run in reverse at inference (rvc-formats.md §2.3 step 5).

ResidualCouplingBlock(192, 192, k5, dilation 1, 3 WN layers, 4 flows, gin 256, mean_only):
the list is [C0, Flip, C1, Flip, C2, Flip, C3, Flip] (odd entries have no parameters, but
keep their indices so the state-dict keys are `flows.0/2/4/6`). Weight norm is folded at
load, so the layers here are plain convs.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class WN(nn.Module):
    """WaveNet-style stack: gated dilated convs conditioned on the speaker vector g."""

    def __init__(
        self, hidden_channels: int, kernel_size: int, dilation_rate: int, n_layers: int, gin_channels: int
    ) -> None:
        super().__init__()
        self.hidden_channels = hidden_channels
        self.n_layers = n_layers
        self.in_layers = nn.ModuleList()
        self.res_skip_layers = nn.ModuleList()
        for i in range(n_layers):
            dilation = dilation_rate**i
            padding = (kernel_size * dilation - dilation) // 2
            self.in_layers.append(
                nn.Conv1d(hidden_channels, 2 * hidden_channels, kernel_size, dilation=dilation, padding=padding)
            )
            res_skip = 2 * hidden_channels if i < n_layers - 1 else hidden_channels
            self.res_skip_layers.append(nn.Conv1d(hidden_channels, res_skip, 1))
        self.cond_layer = nn.Conv1d(gin_channels, 2 * hidden_channels * n_layers, 1)

    def forward(self, x: Tensor, mask: Tensor, g: Tensor) -> Tensor:
        """x [B, H, T], mask [B, 1, T], g [B, gin, 1] -> [B, H, T]."""
        hidden = self.hidden_channels
        cond = self.cond_layer(g)  # [B, 2H * n_layers, 1], broadcast over time
        out = None
        for i, (in_layer, res_skip_layer) in enumerate(zip(self.in_layers, self.res_skip_layers)):
            a = in_layer(x) + cond[:, 2 * hidden * i : 2 * hidden * (i + 1)]
            acts = torch.tanh(a[:, :hidden]) * torch.sigmoid(a[:, hidden:])
            rs = res_skip_layer(acts)
            if i < self.n_layers - 1:
                x = (x + rs[:, :hidden]) * mask
                skip = rs[:, hidden:]
            else:
                skip = rs
            out = skip if out is None else out + skip
        assert out is not None
        return out * mask


class ResidualCouplingLayer(nn.Module):
    """Mean-only affine coupling: x1 <- (x1 - m(x0)) * mask in reverse."""

    def __init__(
        self,
        channels: int,
        hidden_channels: int,
        kernel_size: int,
        dilation_rate: int,
        n_layers: int,
        gin_channels: int,
    ) -> None:
        super().__init__()
        self.half_channels = channels // 2
        self.pre = nn.Conv1d(self.half_channels, hidden_channels, 1)
        self.enc = WN(hidden_channels, kernel_size, dilation_rate, n_layers, gin_channels)
        self.post = nn.Conv1d(hidden_channels, self.half_channels, 1)

    def reverse(self, x: Tensor, mask: Tensor, g: Tensor) -> Tensor:
        x0, x1 = x.split(self.half_channels, dim=1)
        h = self.enc(self.pre(x0) * mask, mask, g)
        m = self.post(h) * mask
        return torch.cat([x0, (x1 - m) * mask], dim=1)


class Flip(nn.Module):
    """Reverse the channel order (its own inverse; no parameters)."""

    def reverse(self, x: Tensor, mask: Tensor, g: Tensor) -> Tensor:
        return torch.flip(x, [1])


class ResidualCouplingBlock(nn.Module):
    """`flow`: n_flows (coupling, flip) pairs; only the reverse direction is implemented."""

    def __init__(
        self,
        channels: int,
        hidden_channels: int,
        kernel_size: int = 5,
        dilation_rate: int = 1,
        n_layers: int = 3,
        n_flows: int = 4,
        gin_channels: int = 0,
    ) -> None:
        super().__init__()
        self.flows = nn.ModuleList()
        for _ in range(n_flows):
            self.flows.append(
                ResidualCouplingLayer(channels, hidden_channels, kernel_size, dilation_rate, n_layers, gin_channels)
            )
            self.flows.append(Flip())

    def reverse(self, z_p: Tensor, mask: Tensor, g: Tensor) -> Tensor:
        """z_p [B, C, T] -> z [B, C, T] (the flow inverted)."""
        x = z_p
        for flow in reversed(self.flows):
            x = flow.reverse(x, mask, g)
        return x
