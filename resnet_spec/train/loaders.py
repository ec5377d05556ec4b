"""Training and validation batches: read from disk by DataLoader workers, or decoded once into memory and
augmented a whole batch at a time on the training device.

Both yield (images, targets, [reasons for skipped images]) in the DistributedSampler's order, so the loop,
DDP sharding and exact resume work the same either way. The in-memory path exists because for small images
the per-image PIL decode and RandomResizedCrop cost as much as the model's own step (docs/training.md).
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from ..errors import InputError
from . import data, distributed

if TYPE_CHECKING:
    from .loop import TrainConfig

# --cache auto holds the decoded images in memory (on the training device) only up to this many bytes.
AUTO_BUDGET = 1 << 30
RATIO = (3 / 4, 4 / 3)  # RandomResizedCrop's aspect-ratio range, torchvision's default


class Batches(Protocol):
    """What the loop iterates each epoch (a DataLoader, or MemoryBatches), and its length in batches."""

    def __iter__(self) -> Iterator[data.Batch]: ...

    def __len__(self) -> int: ...


@dataclass(frozen=True)
class Loaders:
    """The train batches, the val batches, the sampler whose epoch sets the order, and which path they take:
    `cache` is "on" (in memory) or "off" (from disk), what --cache must say to take the same path again."""

    train: Batches
    val: Batches
    sampler: DistributedSampler[int]
    cache: str
    note: str


class BatchRandomResizedCrop:
    """RandomResizedCrop + horizontal flip for a batch of equal-sized images, in a few tensor ops on its device.

    The crop boxes are drawn as torchvision's `RandomResizedCrop.get_params` draws them (area fraction uniform in
    `scale`, log aspect ratio uniform, up to 10 tries, then the clamped center crop), from torch's global CPU RNG.
    Each box is resampled to size x size by `roi_align`: bilinear at the output pixel centres, averaging
    ceil(box / size) samples per pixel when shrinking (an area filter, where PIL uses a wider triangle one).
    It samples the whole image, so a box's edge pixels blend with their neighbours instead of being repeated.
    """

    def __init__(self, size: int, scale: tuple[float, float], hflip: bool) -> None:
        self.size, self.scale, self.hflip = size, scale, hflip

    def boxes(self, n: int, height: int, width: int) -> torch.Tensor:
        """n crop boxes (x1, y1, x2, y2) in pixels, float64, as get_params would choose them."""
        area = height * width
        log_ratio = (math.log(RATIO[0]), math.log(RATIO[1]))
        target = area * torch.empty(n, 10, dtype=torch.float64).uniform_(*self.scale)
        aspect = torch.exp(torch.empty(n, 10, dtype=torch.float64).uniform_(*log_ratio))
        w, h = torch.sqrt(target * aspect).round(), torch.sqrt(target / aspect).round()
        fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
        first = fits.to(torch.uint8).argmax(1, keepdim=True)  # the first try that fits, as the loop takes it
        w, h, found = w.gather(1, first)[:, 0], h.gather(1, first)[:, 0], fits.any(1)
        offsets = torch.rand(n, 2, dtype=torch.float64)
        top, left = (offsets[:, 0] * (height - h + 1)).floor(), (offsets[:, 1] * (width - w + 1)).floor()
        # No try fitted: torchvision's fallback, the whole image clamped to the ratio range, centred.
        fw, fh = float(width), float(height)
        if width / height < RATIO[0]:
            fh = float(round(width / RATIO[0]))
        elif width / height > RATIO[1]:
            fw = float(round(height * RATIO[1]))
        top = torch.where(found, top, float((height - fh) // 2))
        left = torch.where(found, left, float((width - fw) // 2))
        w, h = torch.where(found, w, fw), torch.where(found, h, fh)
        return torch.stack([left, top, left + w, top + h], 1)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, C, H, W) -> float (N, C, size, size) in 0..255, each image cropped, resized and maybe flipped."""
        from torchvision.ops import roi_align
        n, _, height, width = images.shape
        index = torch.arange(n, dtype=torch.float64).unsqueeze(1)
        rois = _to(torch.cat([index, self.boxes(n, height, width)], 1).float(), images.device)
        out = roi_align(images.float(), rois, (self.size, self.size), spatial_scale=1.0, sampling_ratio=-1,
                        aligned=True)
        if self.hflip:
            flip = _to(torch.rand(n) < 0.5, images.device).view(n, 1, 1, 1)
            out = torch.where(flip, out.flip(3), out)
        return out


def _to(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small CPU tensor on `device`. To a GPU it goes from pinned memory without blocking: a plain copy from
    pageable memory would wait for every step already queued, and the loader would stall the GPU each batch."""
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


class MemoryBatches:
    """Batches gathered from images held in one tensor, in the sampler's order (or in order without one)."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, batch_size: int,
                 sampler: DistributedSampler[int] | None = None,
                 augment: BatchRandomResizedCrop | None = None, skipped: tuple[str, ...] = ()) -> None:
        self.images, self.targets, self.batch_size = images, targets, batch_size
        self.sampler, self.augment, self.skipped = sampler, augment, list(skipped)

    def __len__(self) -> int:
        return math.ceil(len(self.sampler if self.sampler is not None else self.targets) / self.batch_size)

    def __iter__(self) -> Iterator[data.Batch]:
        indices = list(self.sampler) if self.sampler is not None else range(len(self.targets))
        order = _to(torch.tensor(indices, dtype=torch.long), self.images.device)
        if not len(order) and self.skipped:  # nothing readable here: still report (and count) what was skipped
            yield self.images[:0], self.targets[:0], self.skipped
        for step, start in enumerate(range(0, len(order), self.batch_size)):
            index = order[start:start + self.batch_size]
            images = self.images[index]
            if self.augment is not None:
                images = self.augment(images)
            # The images that failed to decode are reported with the first batch, once an epoch, as the
            # disk path reports each one when its batch comes round.
            yield images, self.targets[index], self.skipped if step == 0 else []


def _uniform_size(train: data.Split, budget: float) -> tuple[int, int] | str:
    """The (width, height) every image shares, read from the file headers; else why the cache is not used."""
    from PIL import Image
    first: tuple[int, int] | None = None
    total = 0
    for path, _ in train.samples:
        try:
            with Image.open(path) as img:
                size = img.size
        except Exception:  # unreadable: it is reported and skipped when decoded
            continue
        if first is None:
            first = size
        elif size != first:
            return f"images differ in size ({first[0]}x{first[1]} and {size[0]}x{size[1]}, {path})"
        total += 3 * size[0] * size[1]
        if total > budget:
            return f"the decoded train images exceed {budget / 2**30:g} GiB"
    if first is None:
        raise InputError(f"{train.root}: none of the {len(train.samples)} train images could be read")
    return first


def _decode(samples: Sequence[tuple[str, int]], transform: data.Transform, workers: int,
            shape: tuple[int, int, int]) -> data.Batch:
    """Every sample through `transform` into one uint8 (N, *shape) tensor, in order: (images, targets, skipped).

    The tensor is allocated once, so holding the data costs its size and no more; a sample that fails to
    decode, or decodes to another shape than its header said, is skipped with its reason.
    """
    # A worker takes about 0.5 s to start, the time to decode some 6,000 8x8 PNGs here: only use workers
    # when each gets thousands of images.
    workers = min(workers, len(samples) // 5000)
    loader = DataLoader(data.ImageList(samples, transform), batch_size=64, num_workers=workers, collate_fn=list)
    images = torch.empty(len(samples), *shape, dtype=torch.uint8)
    targets: list[int] = []
    skipped: list[str] = []
    for batch in loader:
        for image, target, bad in batch:
            if not bad and tuple(image.shape) != shape:
                bad = f"{samples[len(targets) + len(skipped)][0]}: decoded to {tuple(image.shape)}, not {shape}"
            if bad:
                skipped.append(bad)
            else:
                images[len(targets)] = image
                targets.append(target)
    return images[:len(targets)], torch.tensor(targets, dtype=torch.long), skipped


def _free_bytes(device: torch.device) -> int:
    """Memory free for the cache: the GPU's free memory, or the machine's available RAM."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:  # Linux; elsewhere assume it fits and let the allocator say otherwise
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 2**62


def _in_memory(cfg: TrainConfig, train: data.Split, val: data.Split, val_samples: Sequence[tuple[str, int]],
               dist: distributed.Dist, device: torch.device, val_tf: data.Transform) -> Loaders | str:
    budget = AUTO_BUDGET if cfg.cache == "auto" else math.inf
    size = _uniform_size(train, budget)
    if isinstance(size, str):
        return size
    # Decided from the whole val set, not this rank's slice, so that every rank takes the same path.
    needed = len(val.samples) * 3 * cfg.image_size ** 2 + len(train.samples) * 3 * size[0] * size[1]
    if needed > budget:
        return f"the decoded train and val images exceed {budget / 2**30:g} GiB"
    free = _free_bytes(device)
    if needed > free:
        return (f"the decoded images take {needed / 2**30:.2f} GiB, more than the {free / 2**30:.2f} GiB"
                f" of {device.type} memory free")
    from torchvision.transforms import PILToTensor
    images, targets, skipped = _decode(train.samples, PILToTensor(), cfg.workers, (3, size[1], size[0]))
    if not len(targets):
        raise InputError(f"{train.root}: none of the {len(train.samples)} train images could be read")
    # The sampler below splits the readable images among the ranks: they must all have read the same ones.
    counts = distributed.all_gather_int(len(targets), dist, device)
    if len(set(counts)) > 1:
        raise InputError(f"{train.root}: the ranks read different numbers of train images ({counts});"
                           " is the dataset changing, or not the same on every machine?")
    # The sampler takes only the length of its dataset: one index per readable image.
    sampler: DistributedSampler[int] = DistributedSampler(TensorDataset(targets), num_replicas=dist.world,
                                                          rank=dist.rank, shuffle=True, seed=cfg.seed)
    augment = BatchRandomResizedCrop(cfg.image_size, (cfg.min_scale, 1.0), cfg.hflip)
    # Every rank holds all train images, so only rank 0 counts the unreadable ones.
    train_batches = MemoryBatches(images.to(device), targets.to(device), cfg.batch_size, sampler, augment,
                                  tuple(skipped) if dist.main else ())
    # Validation is deterministic: its transform runs once, here, and each epoch reads the result.
    images, targets, skipped = _decode(val_samples, val_tf, cfg.workers, (3, cfg.image_size, cfg.image_size))
    val_batches = MemoryBatches(images.to(device), targets.to(device), cfg.batch_size, skipped=tuple(skipped))
    count = len(train_batches.images) + len(val_batches.images)
    mib = (train_batches.images.numel() + val_batches.images.numel()) / 2**20
    note = (f"data: {count} images decoded once into {device.type} memory ({mib:.1f} MiB);"
            " train crops are drawn batch-wise there")
    return Loaders(train_batches, val_batches, sampler, "on", note)


def make(cfg: TrainConfig, train: data.Split, val: data.Split, dist: distributed.Dist, device: torch.device) -> Loaders:
    """The run's batches: in memory when `cache` says so (auto: equal-sized images within budget), else from disk."""
    train_tf, val_tf = data.transforms(cfg.image_size, cfg.min_scale, cfg.hflip)
    # Every rank sees a disjoint slice of val with no padding, so summed counts are exact.
    val_samples = val.samples[dist.rank::dist.world]
    reason = "cache: off"
    if cfg.cache != "off":
        loaders = _in_memory(cfg, train, val, val_samples, dist, device, val_tf)
        if isinstance(loaders, Loaders):
            return loaders
        if cfg.cache == "on":
            raise InputError(f"cache on: cannot hold {train.root} in memory: {loaders}", setting="cache")
        reason = loaders
    train_ds = data.ImageList(train.samples, train_tf)
    val_ds = data.ImageList(val_samples, val_tf)
    # DistributedSampler with one replica is a seeded shuffle whose order depends only on (seed, epoch):
    # that is what lets --resume replay the remaining epochs exactly.
    sampler: DistributedSampler[int] = DistributedSampler(train_ds, num_replicas=dist.world, rank=dist.rank,
                                                          shuffle=True, seed=cfg.seed)
    pin = device.type == "cuda"
    train_loader = DataLoader(train_ds, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.workers,
                              collate_fn=data.collate, pin_memory=pin, drop_last=False)
    val_loader = DataLoader(val_ds, batch_size=cfg.batch_size, shuffle=False, num_workers=cfg.workers,
                            collate_fn=data.collate, pin_memory=pin)
    return Loaders(train_loader, val_loader, sampler, "off",
                   f"data: read from disk by {cfg.workers} workers ({reason})")
