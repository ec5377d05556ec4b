"""Training and evaluation bookkeeping: top-k counts, the per-epoch CSV, the curves and confusion-matrix plots."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..fileio import atomic_write

if TYPE_CHECKING:
    import torch
    from matplotlib.figure import Figure
    from numpy.typing import NDArray

# metrics.csv columns, in order; one row per completed epoch.
# data_wait_s is the part of train_s the loop spent waiting for the loader (mean over ranks).
COLUMNS = ("epoch", "train_loss", "val_loss", "val_top1", "val_top5", "lr", "images_per_s", "train_s", "data_wait_s",
           "skipped_images", "epoch_s")


def topk_correct(logits: torch.Tensor, targets: torch.Tensor, ks: tuple[int, ...]) -> torch.Tensor:
    """How many rows have their target among the top k logits, for each k (a float64 tensor)."""
    import torch
    if targets.numel() == 0:
        return torch.zeros(len(ks), dtype=torch.float64, device=logits.device)
    kmax = min(max(ks), logits.shape[1])
    top = logits.topk(kmax, dim=1).indices
    hit = top.eq(targets[:, None])
    return torch.stack([hit[:, :min(k, kmax)].any(dim=1).sum() for k in ks]).to(torch.float64)


def write_csv(path: str | Path, rows: list[dict[str, Any]]) -> Path:
    """Rewrite metrics.csv from the whole history, atomically (so a resumed run's log matches its checkpoint)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _fmt(row[k]) for k in COLUMNS})
    data = buf.getvalue().encode()
    return atomic_write(path, lambda f: f.write(data))


def _fmt(v: object) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def _save_figure(fig: Figure, path: str | Path) -> Path:
    import matplotlib.pyplot as plt
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    data = buf.getvalue()
    return atomic_write(path, lambda f: f.write(data))


def plot_curves(path: str | Path, rows: list[dict[str, Any]]) -> Path:
    """curves.png: train and val loss on the left, val top-1 and top-5 on the right, by epoch."""
    import matplotlib
    matplotlib.use("Agg")  # no display on training machines
    import matplotlib.pyplot as plt
    epochs = [r["epoch"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(epochs, [r["train_loss"] for r in rows], "o-", label="train loss")
    left.plot(epochs, [r["val_loss"] for r in rows], "o-", label="val loss")
    left.set_xlabel("epoch")
    left.set_ylabel("loss")
    left.legend()
    right.plot(epochs, [100 * r["val_top1"] for r in rows], "o-", label="val top-1")
    right.plot(epochs, [100 * r["val_top5"] for r in rows], "o-", label="val top-5")
    right.set_xlabel("epoch")
    right.set_ylabel("accuracy (%)")
    right.legend()
    from matplotlib.ticker import MaxNLocator
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    return _save_figure(fig, path)


def plot_confusion(path: str | Path, matrix: NDArray[Any], classes: tuple[str, ...]) -> Path:
    """A confusion-matrix PNG: rows are true classes, columns predicted, each cell its count."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    n = len(classes)
    side = min(4 + 0.5 * n, 30)
    fig, ax = plt.subplots(figsize=(side, side))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(n), classes, rotation=90 if n > 10 else 0)
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 30:  # counts stay legible up to about this many classes
        peak = max(int(matrix.max()), 1)
        for i in range(n):
            for j in range(n):
                v = int(matrix[i, j])
                ax.text(j, i, str(v), ha="center", va="center", fontsize=8,
                        color="white" if v > peak / 2 else "black")
    fig.tight_layout()
    return _save_figure(fig, path)
