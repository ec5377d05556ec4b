"""Image-folder data for training, evaluation and prediction: checks, transforms, a dataset that skips bad images."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch.utils.data import Dataset

from ..errors import InputError

if TYPE_CHECKING:
    from PIL import Image

# torchvision's ImageFolder extensions, so a folder that works there works here.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
# The ImageNet statistics the seed normalises with; every torchvision/timm ResNet expects them.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)

# One image as ImageList yields it: its uint8 tensor (None when unreadable), its target, and why it was
# skipped ("" when it was not).
Sample = tuple[torch.Tensor | None, int, str]
# A collated batch: the uint8 images that decoded, their targets, and the reasons for the ones skipped.
Batch = tuple[torch.Tensor, torch.Tensor, list[str]]
# A PIL image to a uint8 CHW tensor.
Transform = Callable[["Image.Image"], torch.Tensor]


@dataclass(frozen=True)
class Split:
    """One folder of class subfolders: the class names (sorted, as ImageFolder) and (path, class index) pairs."""

    root: Path
    classes: tuple[str, ...]
    samples: tuple[tuple[str, int], ...]


def is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS


def scan_split(root: str | Path, what: str) -> Split:
    """Read a folder of class subfolders; raise InputError on a missing folder or an empty class."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: no {what} folder (expected class subfolders of images there)")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise InputError(f"{root}: no class subfolders in the {what} folder")
    samples: list[tuple[str, int]] = []
    for index, name in enumerate(classes):
        files = sorted(p for p in (root / name).rglob("*") if is_image(p))
        if not files:
            raise InputError(f"{root / name}: empty class folder (no {'/'.join(IMAGE_EXTENSIONS)} images)")
        samples.extend((str(p), index) for p in files)
    return Split(root, tuple(classes), tuple(samples))


def scan_dataset(data: str | Path) -> tuple[Split, Split]:
    """The train/ and val/ splits of a dataset folder, checked before any training starts."""
    data = Path(data)
    if not data.is_dir():
        raise InputError(f"{data}: no such dataset folder")
    train = scan_split(data / "train", "train/")
    val = scan_split(data / "val", "val/")
    if len(train.classes) < 2:
        raise InputError(f"{train.root}: only one class ('{train.classes[0]}'); classification needs at least two")
    if val.classes != train.classes:
        only_train = sorted(set(train.classes) - set(val.classes))
        only_val = sorted(set(val.classes) - set(train.classes))
        raise InputError(f"{data}: train/ and val/ have different classes"
                           f" (only in train/: {only_train or 'none'}; only in val/: {only_val or 'none'})")
    return train, val


def load_image(path: str) -> Image.Image:
    """Open an image as RGB, decoding it fully now so a truncated file fails here, not inside a transform."""
    from PIL import Image
    with Image.open(path) as img:
        return img.convert("RGB")


def transforms(image_size: int, min_scale: float = 0.08, hflip: bool = True) -> tuple[Transform, Transform]:
    """(train, eval) transforms: the seed's pipeline with 224 replaced by image_size, ending in uint8 tensors.

    The seed's ToTensor + Normalize happen batch-wise in `normalize`, on the training device (as timm's
    PrefetchLoader does): per image they cost about as much as the crop, and uint8 batches are a quarter of
    the bytes to pass from loader workers and copy to the GPU.
    """
    from torchvision import transforms as T
    train = [T.RandomResizedCrop(image_size, scale=(min_scale, 1.0))]
    if hflip:
        train.append(T.RandomHorizontalFlip())
    # The seed resizes to 256 and crops 224; keep that ratio at any size.
    evaluation = [T.Resize(round(image_size * 256 / 224)), T.CenterCrop(image_size)]
    return T.Compose(train + [T.PILToTensor()]), T.Compose(evaluation + [T.PILToTensor()])


_STATS: dict[tuple[torch.device, tuple[float, ...], tuple[float, ...]], tuple[torch.Tensor, torch.Tensor]] = {}


def normalize(images: torch.Tensor, device: torch.device, channels_last: bool = False,
              mean_std: tuple[tuple[float, ...], tuple[float, ...]] = (MEAN, STD)) -> torch.Tensor:
    """NCHW images in 0..255 (uint8 from disk, float from the in-memory crop) -> the float input the seed feeds:
    /255 (ToTensor), then the mean and std (Normalize): ImageNet's, or the spec's `input.mean` and `input.std`."""
    key = (device, *mean_std)
    if key not in _STATS:
        _STATS[key] = (torch.tensor(mean_std[0], device=device).view(1, -1, 1, 1),
                       torch.tensor(mean_std[1], device=device).view(1, -1, 1, 1))
    mean, std = _STATS[key]
    # div, not div_: a float batch may be the caller's own (a batch kept and fed again), and is not changed.
    x = images.to(device, non_blocking=True).float().div(255).sub_(mean).div_(std)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


class ImageList(Dataset[Sample]):
    """A map-style dataset over (path, target) pairs; a bad image yields (None, target, 'path: reason')."""

    def __init__(self, samples: Sequence[tuple[str, int]], transform: Transform) -> None:
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Sample:
        path, target = self.samples[index]
        try:
            image = self.transform(load_image(path))
        except Exception as e:  # any decode failure (truncated, not an image, unreadable) skips this one file
            return None, target, f"{path}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(": ")
        return image, target, ""


def collate(batch: list[Sample]) -> Batch:
    """Stack the good samples of a batch; return (images, targets, [reasons for the skipped ones])."""
    good = [(x, t) for x, t, bad in batch if x is not None and not bad]
    skipped = [bad for _, _, bad in batch if bad]
    if not good:
        return torch.empty(0, dtype=torch.uint8), torch.empty(0, dtype=torch.long), skipped
    images = torch.stack([x for x, _ in good])
    targets = torch.tensor([t for _, t in good], dtype=torch.long)
    return images, targets, skipped
