"""Using a trained checkpoint: load it with its classes, predict images in batches, evaluate on a class folder."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import InputError
from ..spec.types import ResNetSpec
from . import data, metrics


@dataclass(frozen=True)
class Trained:
    """A model ready for inference, with the class names and input size it was trained with."""

    model: nn.Module
    classes: tuple[str, ...]
    image_size: int
    name: str
    notes: tuple[str, ...] = ()  # what was done to read the weights (unwrapped, prefixes stripped, keys mapped)
    mean_std: tuple[tuple[float, ...], tuple[float, ...]] = (data.MEAN, data.STD)  # the spec's input normalisation


def load_trained(path: str | Path, device: torch.device, image_size: int | None = None,
                 spec: ResNetSpec | None = None) -> Trained:
    """A model ready to classify: a train checkpoint or run folder with its embedded spec and class names, or plain
    weights (any source read_weights takes) with `spec`; a mismatch is one InputError saying what differs."""
    from ..model.load import build_with, spec_of
    from ..model.weights import read_weights
    if spec is not None:
        check_image_size(spec, image_size)
    weights = read_weights(path)
    if spec is None:
        spec = spec_of(weights, path)
        check_image_size(spec, image_size)
    if spec.features is not None or spec.head is None:
        raise InputError(f"{path}: its spec '{spec.name}' has no classifier head, so it cannot predict classes")
    classes = list(weights.classes) if weights.classes is not None else None
    if classes is None:  # e.g. `resnet-spec build --out` or a plain state_dict: classes are known only by index
        classes = [str(i) for i in range(spec.head.num_classes)]
    if len(classes) != spec.head.num_classes:
        raise InputError(f"{path}: {len(classes)} class names but the spec's head has {spec.head.num_classes} outputs")
    if len(set(classes)) != len(classes):
        raise InputError(f"{path}: class names repeat")
    try:
        model = build_with(spec, weights)
    except InputError as e:
        which = "the embedded spec" if weights.spec_data is not None else "the spec"
        detail = str(e).split("do not fit this model: ", 1)[-1]
        raise InputError(f"{path}: weights do not match {which} '{spec.name}' ({detail})", setting=e.setting) from None
    size = image_size or int((weights.config or {}).get("image_size") or spec.input_size)
    return Trained(model.to(device).eval(), tuple(classes), size, spec.name, weights.notes,
                   (spec.eval_transform.mean, spec.eval_transform.std))


def check_image_size(spec: ResNetSpec, image_size: int | None) -> None:
    """InputError (setting image_size) if the spec's feature-map rules fail at `image_size`: before a model is built."""
    if image_size is None or image_size == spec.input_size:
        return
    from ..spec.rules import size_problems
    problems = size_problems(spec, image_size)
    if problems:
        raise InputError(f"image_size {image_size}: {problems[0]}", setting="image_size")


@dataclass(frozen=True)
class Prediction:
    """The top-k classes of one image, most probable first."""

    image: str
    top: tuple[tuple[str, int, float], ...]  # (class name, class index, probability)


@torch.no_grad()
def predict(trained: Trained, images: list[str], topk: int, batch_size: int, device: torch.device,
            on_bad: Callable[[str], None] | None = None) -> list[Prediction]:
    """Top-k predictions for each readable image; an unreadable one is passed to on_bad('path: reason'), skipped."""
    _, tf = data.transforms(trained.image_size)
    ds = data.ImageList(tuple((p, -1) for p in images), tf)
    k = min(topk, len(trained.classes))
    out: list[Prediction] = []
    for start in range(0, len(ds), batch_size):
        batch = [ds[i] + (images[i],) for i in range(start, min(start + batch_size, len(ds)))]
        good = [(x, path) for x, _, bad, path in batch if x is not None and not bad]
        for _, _, bad, _ in batch:
            if bad and on_bad is not None:
                on_bad(bad)
        if not good:
            continue
        inputs = data.normalize(torch.stack([x for x, _ in good]), device, mean_std=trained.mean_std)
        probs = trained.model(inputs).float().softmax(dim=1)
        values, indices = probs.topk(k, dim=1)
        for (_, path), vs, ix in zip(good, values.tolist(), indices.tolist(), strict=True):
            out.append(Prediction(path, tuple((trained.classes[i], i, v) for v, i in zip(vs, ix, strict=True))))
    return out


@dataclass(frozen=True)
class Evaluation:
    """Accuracy on a labelled folder: overall top-1/top-5, per class, and the confusion matrix (true x predicted)."""

    images: int
    skipped: int
    top1: float
    top5: float
    per_class: tuple[tuple[str, int, float], ...]  # (class, images, top-1 accuracy)
    confusion: torch.Tensor


@torch.no_grad()
def evaluate(trained: Trained, folder: str | Path, batch_size: int, workers: int, device: torch.device,
             on_bad: Callable[[str], None] | None = None) -> Evaluation:
    """Evaluate on a folder of class subfolders whose names are among the checkpoint's classes."""
    from torch.utils.data import DataLoader
    split = data.scan_split(folder, "evaluation")
    unknown = [c for c in split.classes if c not in trained.classes]
    if unknown:
        raise InputError(f"{folder}: class folders {unknown} are not among the checkpoint's classes"
                         f" {list(trained.classes)}")
    # Folder indices follow this folder's sorted names; map them to the checkpoint's indices by name.
    remap = [trained.classes.index(c) for c in split.classes]
    samples = tuple((p, remap[t]) for p, t in split.samples)
    _, tf = data.transforms(trained.image_size)
    loader = DataLoader(data.ImageList(samples, tf), batch_size=batch_size, num_workers=workers,
                        collate_fn=data.collate)
    n = len(trained.classes)
    confusion = torch.zeros(n, n, dtype=torch.int64)
    hits = torch.zeros(2, dtype=torch.float64)
    skipped = 0
    for images, targets, bad in loader:
        for reason in bad:
            if on_bad is not None:
                on_bad(reason)
        skipped += len(bad)
        if len(targets) == 0:
            continue
        logits = trained.model(data.normalize(images, device, mean_std=trained.mean_std)).float().cpu()
        hits += metrics.topk_correct(logits, targets, (1, 5))
        confusion += torch.bincount(targets * n + logits.argmax(dim=1), minlength=n * n).reshape(n, n)
    seen = int(confusion.sum())
    if seen == 0:
        raise InputError(f"{folder}: no readable images to evaluate")
    per_class = tuple((trained.classes[i], int(confusion[i].sum()), float(confusion[i, i] / confusion[i].sum()))
                      for i in range(n) if confusion[i].sum() > 0)
    return Evaluation(seen, skipped, float(hits[0] / seen), float(hits[1] / seen), per_class, confusion)
