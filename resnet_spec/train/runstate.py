"""A training run's checkpoint: everything `--resume` needs, as tensors and plain data so weights_only loading works."""
from __future__ import annotations

import errno
import io
import os
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch

if TYPE_CHECKING:
    from numpy.typing import NDArray

from ..errors import OutputError
from ..fileio import atomic_write
from ..model.checkpoint import FORMAT


def rng_state() -> dict[str, Any]:
    """Python, numpy, torch and CUDA RNG states, with numpy's and Python's arrays turned into tensors."""
    import numpy as np
    py_version, py_state, py_gauss = random.getstate()
    # The legacy (default) form is always this tuple; numpy's hint also allows the dict form.
    np_state = cast("tuple[str, NDArray[np.uint32], int, int, float]", np.random.get_state())
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np_state
    state: dict[str, Any] = {
        "python": {"version": py_version, "state": torch.tensor(py_state, dtype=torch.int64), "gauss": py_gauss},
        "numpy": {"kind": np_kind, "keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what rng_state() captured."""
    import numpy as np
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (all devices) from one integer, of any size (numpy and torch get its low bits)."""
    import numpy as np
    random.seed(seed)
    np.random.seed(seed % 2**32)
    # The per-epoch seed is derived as seed * 1_000_003 + ..., which passes torch's 64-bit range for large --seed.
    torch.manual_seed(seed % 2**64)


def payload(*, model: torch.nn.Module, spec_name: str, spec_data: dict[str, Any], classes: tuple[str, ...],
            config: dict[str, Any], optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler,
            scaler: torch.amp.GradScaler, epoch: int, best_top1: float,
            history: list[dict[str, Any]]) -> dict[str, Any]:
    """The checkpoint dict: checkpoint.py's {format, name, spec, state_dict} plus the training state."""
    return {
        "format": FORMAT,
        "name": spec_name,
        "spec": spec_data,
        "state_dict": model.state_dict(),
        "classes": list(classes),
        "train_config": config,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "epoch": epoch,
        "best_top1": best_top1,
        "history": history,
        "rng": rng_state(),
    }


def save(paths: list[Path], obj: dict[str, Any], kept: str) -> None:
    """Serialise once and write each path atomically (temp file, fsync, rename); a failed write is an OutputError
    naming the path and the cause, a full disk as such, and ending with `kept` (what the run still has)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    data = buf.getvalue()
    for p in paths:
        try:
            atomic_write(p, lambda f: f.write(data))
        except OutputError as e:
            raise OutputError(f"{p}: cannot save epoch {obj['epoch']}: {_failure(e, p)}; {kept}") from e


def _failure(e: OutputError, path: Path) -> str:
    cause = e.__cause__
    if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"the disk is full ({cause.strerror or os.strerror(cause.errno)})"
    if isinstance(cause, OSError) and cause.strerror:
        return f"writing failed ({cause.strerror})"
    if cause is not None:
        return f"writing failed ({(str(cause).strip().splitlines() or [type(cause).__name__])[0][:200]})"
    return str(e).removeprefix(f"{path}: ")  # refused before writing: the folder went away or is read-only
