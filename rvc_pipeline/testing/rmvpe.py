"""Random-weight `rmvpe.pt` in the real format: a bare state dict with RMVPE's 741 keys.

The real file holds 90.5 M fp32 elements (362 MB). Tests only need the layout, so the
factory stores floating tensors in fp16 by default (181 MB, same keys and shapes);
`load_state_dict` casts them back to fp32 on load.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .files import save_torch


def random_rmvpe_state_dict(*, seed: int = 0, dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
    """State dict of a randomly initialised `RMVPENet` (floating tensors cast to `dtype`)."""
    from ..pitch.rmvpe import RMVPENet

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = RMVPENet()
        # Non-trivial BatchNorm statistics, so a load that skipped them would show.
        for name, tensor in net.state_dict().items():
            if name.endswith("running_mean"):
                tensor.normal_(0.0, 0.1)
            elif name.endswith("running_var"):
                tensor.uniform_(0.5, 1.5)
    return {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in net.state_dict().items()}


def write_random_rmvpe(path: Path, *, seed: int = 0, dtype: torch.dtype = torch.float16) -> Path:
    """Write a random-weight `rmvpe.pt` (bare state dict, as the public file) to `path`."""
    return save_torch(path, random_rmvpe_state_dict(seed=seed, dtype=dtype))
