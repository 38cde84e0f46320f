"""Reading fairseq training checkpoints without executing their pickles.

A fairseq `hubert_base.pt` is a `torch.save`d dict whose `cfg` (omegaconf `DictConfig`
in some files) or legacy `args` (`argparse.Namespace`) hold Python objects that
`torch.load(weights_only=True)` refuses. We never import fairseq or omegaconf and never
call the globals a file names. Instead, the file's globals are listed statically
(`torch.serialization.get_unsafe_globals_in_checkpoint`); if every one belongs to the
small set of configuration namespaces below, each is replaced by an inert stand-in
class that only records the data the pickle hands it, and the file is read with
`weights_only=True` again. Any other global (`os.system`, `builtins.eval`, ...) makes
the file unreadable: `CheckpointError`, nothing executed.
"""

from __future__ import annotations

import pickle
import threading
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError

#: Module prefixes whose classes may appear in a fairseq checkpoint's config and
#: bookkeeping entries (configs, enums, meters, dictionaries). They become stand-ins.
_STAND_IN_PREFIXES = ("omegaconf.", "fairseq.", "typing.", "enum.")

#: Exact global names that become stand-ins (plain data types seen in configs and meters).
_STAND_IN_NAMES = frozenset(
    {
        "argparse.Namespace",
        "collections.defaultdict",
        "builtins.dict",
        "builtins.list",
        "builtins.tuple",
        "builtins.set",
        "builtins.frozenset",
        "builtins.str",
        "builtins.int",
        "builtins.float",
        "builtins.bool",
        "builtins.object",
        "builtins.NoneType",
        "pathlib.Path",
        "pathlib.PosixPath",
        "pathlib.WindowsPath",
        "numpy.dtype",
        "numpy.ndarray",
        "numpy.core.multiarray.scalar",
        "numpy._core.multiarray.scalar",
        "numpy.core.multiarray._reconstruct",
        "numpy._core.multiarray._reconstruct",
    }
)

# torch keeps allow-listed globals in a process-wide set; serialise our temporary additions.
_LOCK = threading.Lock()


class StandIn:
    """Inert replacement for a class named in a checkpoint: records what unpickling gives it.

    `qualified_name` is the global it replaced; `args` the constructor arguments;
    `state` the BUILD state; `items` any SETITEM pairs. It runs no code of the original.
    """

    qualified_name = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> StandIn:
        inst = object.__new__(cls)
        inst.args = args
        inst.state = None
        inst.items = {}
        return inst

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass  # everything was recorded by __new__

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items[key] = value

    def __repr__(self) -> str:
        return f"StandIn({self.qualified_name})"


def _is_stand_in_allowed(name: str) -> bool:
    return name in _STAND_IN_NAMES or name.startswith(_STAND_IN_PREFIXES)


def _make_stand_in(name: str) -> type[StandIn]:
    return type(name.rsplit(".", 1)[-1], (StandIn,), {"qualified_name": name})


def load_torch_file(path: Path) -> Any:
    """`torch.load` a file on the CPU, tensors only plus (if needed) inert config stand-ins.

    Raises CheckpointError for unreadable files and for pickles naming any other global.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first_error: Exception = e
    except Exception as e:  # zip/format errors: not a torch file at all
        raise CheckpointError(f"cannot read {path.name}: not a readable PyTorch file ({e})") from e

    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception as e:  # legacy (non-zip) format: cannot list globals statically
        raise CheckpointError(
            f"refusing to load {path.name}: it contains Python objects that are not tensors "
            f"({first_error})"
        ) from e
    refused = sorted(name for name in names if not _is_stand_in_allowed(name))
    if refused or not names:
        shown = ", ".join(refused[:5]) or str(first_error)
        raise CheckpointError(
            f"refusing to load {path.name}: its pickle calls code that a checkpoint must not "
            f"contain ({shown}); the file may be malicious or is not a HuBERT checkpoint"
        ) from first_error
    stand_ins = [(_make_stand_in(name), name) for name in names]
    with _LOCK, torch.serialization.safe_globals(stand_ins):
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise CheckpointError(f"refusing to load {path.name}: {e}") from e


def to_plain(obj: Any, _depth: int = 0) -> Any:
    """Turn stand-ins (omegaconf configs and nodes, Namespaces, enums) into dicts/lists/values.

    omegaconf containers keep their data in `_content`, value nodes in `_val`; a Namespace
    keeps it in its state dict; an enum member in its single constructor argument.
    """
    if _depth > 64:
        raise CheckpointError("checkpoint config is nested too deeply")
    depth = _depth + 1
    if isinstance(obj, StandIn):
        state = obj.state
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict):
            state = state[0]  # (dict state, slot state)
        if isinstance(state, dict):
            if "_content" in state:
                return to_plain(state["_content"], depth)
            if "_val" in state:
                return to_plain(state["_val"], depth)
            return {k: to_plain(v, depth) for k, v in state.items() if isinstance(k, str)}
        if obj.items:
            return {k: to_plain(v, depth) for k, v in obj.items.items()}
        if len(obj.args) == 1:
            return to_plain(obj.args[0], depth)
        return None
    if isinstance(obj, dict):
        return {k: to_plain(v, depth) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v, depth) for v in obj]
    return obj
