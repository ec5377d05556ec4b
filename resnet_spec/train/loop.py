"""Training a spec on an image folder: one process, or many under torchrun (DistributedDataParallel)."""
from __future__ import annotations

import gc
import json
import math
import sys
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError, PeerError
from ..fileio import atomic_write
from ..registry import lookup
from ..spec.types import ResNetSpec, with_num_classes
from . import data, distributed, finetune, loaders, metrics, runstate
from .optimizers import OPTIMIZERS


@dataclass(frozen=True)
class TrainConfig:
    """Every choice a run makes; saved in each checkpoint so --resume repeats them."""

    spec: str
    data: str
    out: str
    image_size: int = 224
    epochs: int = 30
    batch_size: int = 128
    workers: int = 4
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    warmup: int = 0
    label_smoothing: float = 0.0
    seed: int = 0
    device: str = "auto"
    amp: str = "none"
    channels_last: bool = False
    min_scale: float = 0.08
    hflip: bool = True
    cache: str = "auto"
    weights: str | None = None   # start from these weights (any source read_weights takes), head re-initialised
    freeze: int = 0              # stem and this many first stages frozen, BatchNorm statistics included
    head_lr_scale: float = 1.0   # the classifier's learning rate, as a multiple of lr


def lr_factor(step: int, steps_per_epoch: int, cfg: TrainConfig) -> float:
    """The learning-rate multiplier after `step` optimizer steps: linear warmup, then cosine, step or constant."""
    warm = cfg.warmup * steps_per_epoch
    if step < warm:
        return (step + 1) / warm
    total = max(cfg.epochs * steps_per_epoch - warm, 1)
    progress = min((step - warm) / total, 1.0)
    if cfg.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if cfg.schedule == "step":  # x0.1 after each third of training, torchvision's recipe in proportion
        return 0.1 ** min(int(3 * progress), 2)
    return 1.0


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """cfg.optimizer (a name in OPTIMIZERS) over the model's trainable parameters, the head at its own rate when
    cfg.head_lr_scale says so; ValueError for an unknown name."""
    factory = lookup(OPTIMIZERS, "optimizer", cfg.optimizer)
    groups = finetune.param_groups(model, cfg.lr, cfg.head_lr_scale)
    return factory(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """bf16 or fp16 autocast on CUDA; bf16 also on CPU. fp16 on CPU is refused: it needs a gradient scaler."""
    if amp == "none":
        return None
    if amp == "fp16" and device.type != "cuda":
        raise InputError("amp fp16 needs a CUDA device (it relies on a gradient scaler); use amp bf16 on CPU",
                         setting="amp")
    return torch.bfloat16 if amp == "bf16" else torch.float16


def prepare_spec(spec: ResNetSpec, classes: tuple[str, ...]) -> ResNetSpec:
    """The spec with its head sized to the data's classes; refuse specs that cannot classify RGB images."""
    check_trainable(spec)
    return with_num_classes(spec, len(classes))


def check_trainable(spec: ResNetSpec) -> None:
    """InputError for a spec that cannot classify RGB images: one that returns feature maps, or not 3 channels."""
    if spec.features is not None:
        raise InputError(f"spec '{spec.name}' returns feature maps (features: {list(spec.features)}), not logits; "
                           "training needs a classifier head")
    if spec.in_channels != 3:
        raise InputError(f"spec '{spec.name}' takes {spec.in_channels}-channel input; training reads RGB images (3)")


class Run:
    """One training run's live state; `fit()` trains from `start_epoch` to cfg.epochs."""

    def __init__(self, cfg: TrainConfig, spec: ResNetSpec, train: data.Split, val: data.Split,
                 resume: dict[str, Any] | None, dist: distributed.Dist) -> None:
        self.cfg, self.dist, self.classes = cfg, dist, train.classes
        self.device = distributed.pick_device(cfg.device, dist)
        self.amp = autocast_dtype(cfg.amp, self.device)
        self.out = Path(cfg.out)
        self.spec = prepare_spec(spec, train.classes)
        runstate.seed_everything(cfg.seed)  # the model's initial weights depend on the seed only
        from ..model.factory import build_model
        self.model = build_model(self.spec).to(self.device)
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.weights_notes: list[str] = []
        if resume is not None:
            self.model.load_state_dict(resume["state_dict"])
        elif cfg.weights:
            self.weights_notes = finetune.load_pretrained(self.model, cfg.weights)
        # Frozen after loading, on resume too: the run's config says what stays as the weights had it.
        self.frozen = finetune.freeze(self.model, cfg.freeze)
        batches = loaders.make(cfg, train, val, dist, self.device)
        # The checkpoints record the path taken, not "auto": a resumed run must not re-decide it.
        self.cfg = cfg = replace(cfg, cache=batches.cache)
        self.train_loader, self.val_loader, self.sampler = batches.train, batches.val, batches.sampler
        self.data_note = batches.note
        self.steps_per_epoch = len(self.train_loader)
        self.net: nn.Module = self.model
        if dist.enabled:
            self.net = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.optimizer = make_optimizer(self.model, cfg)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, self.steps_per_epoch, cfg))
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == torch.float16)
        self.start_epoch, self.best_top1 = 0, -1.0
        self.history: list[dict[str, Any]] = []
        if resume is not None:
            self.optimizer.load_state_dict(resume["optimizer"])
            self.scheduler.load_state_dict(resume["scheduler"])
            self.scaler.load_state_dict(resume["scaler"])
            self.start_epoch, self.best_top1 = int(resume["epoch"]), float(resume["best_top1"])
            self.history = list(resume["history"])
            runstate.set_rng_state(resume["rng"])
        self.saved_epoch = self.start_epoch  # the epoch last.pt holds
        self.seen_bad: set[str] = set()

    def _inputs(self, images: torch.Tensor) -> torch.Tensor:
        t = self.spec.eval_transform
        return data.normalize(images, self.device, self.cfg.channels_last, (t.mean, t.std))

    def _report_bad(self, skipped: list[str]) -> None:
        for reason in skipped:
            if reason not in self.seen_bad:
                self.seen_bad.add(reason)
                from tqdm import tqdm
                tqdm.write(f"resnet-spec train: skipping unreadable image {reason}", file=sys.stderr)

    def train_epoch(self, epoch: int) -> torch.Tensor:
        """One pass over train/: (summed loss, images, skipped images, seconds spent waiting for data) on this rank."""
        from tqdm import tqdm
        # Each epoch's augmentation and worker seeds are a function of (seed, epoch, rank) alone.
        runstate.seed_everything(self.cfg.seed * 1_000_003 + epoch * 1_009 + self.dist.rank)
        self.sampler.set_epoch(epoch)
        self.net.train()
        for m in self.frozen:  # frozen stages keep their BatchNorm statistics
            m.eval()
        totals = torch.zeros(3, dtype=torch.float64, device=self.device)
        waited = 0.0
        bar = tqdm(self.train_loader, desc=f"epoch {epoch + 1}/{self.cfg.epochs}", unit="batch",
                   disable=not self.dist.main, file=sys.stderr, dynamic_ncols=True, leave=True)
        t0 = ready = time.perf_counter()
        for step, (images, targets, skipped) in enumerate(bar):
            waited += time.perf_counter() - ready  # the loader, not the model, held us up this long
            if skipped:
                self._report_bad(skipped)
                totals[2] += len(skipped)
            n = len(targets)
            if n == 0 and not self.dist.enabled:
                with warnings.catch_warnings():  # on purpose: a skipped batch still moves the schedule on
                    warnings.filterwarnings("ignore", r"Detected call of `lr_scheduler\.step\(\)` before")
                    self.scheduler.step()  # keep the schedule in step with the batch count
                ready = time.perf_counter()
                continue
            if n == 0:  # every rank must join DDP's gradient all-reduce: an empty batch contributes zero
                images = torch.zeros(0, 3, self.cfg.image_size, self.cfg.image_size, dtype=torch.uint8)
            images, targets = self._inputs(images), targets.to(self.device, non_blocking=True)
            with torch.autocast(self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None):
                logits = self.net(images)
            loss_sum = F.cross_entropy(logits.float(), targets, label_smoothing=self.cfg.label_smoothing,
                                       reduction="sum")
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss_sum / max(n, 1)).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            totals[0] += loss_sum.detach()
            totals[1] += n
            if self.dist.main and (step % 10 == 0 or step == self.steps_per_epoch - 1):
                seen = totals[1].item()  # a device sync, so only every 10 steps
                rate = seen * self.dist.world / (time.perf_counter() - t0)
                bar.set_postfix(loss=f"{totals[0].item() / max(seen, 1):.4f}", img_s=f"{rate:.0f}", refresh=False)
            ready = time.perf_counter()
        bar.close()
        return torch.cat([totals, torch.tensor([waited], dtype=torch.float64, device=self.device)])

    @torch.no_grad()
    def evaluate(self) -> torch.Tensor:
        """Summed val loss, top-1 hits, top-5 hits, images and skipped images for this rank (float64)."""
        self.model.eval()
        totals = torch.zeros(5, dtype=torch.float64, device=self.device)
        for images, targets, skipped in self.val_loader:
            if skipped:
                self._report_bad(skipped)
                totals[4] += len(skipped)
            if len(targets) == 0:
                continue
            images, targets = self._inputs(images), targets.to(self.device, non_blocking=True)
            with torch.autocast(self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None):
                logits = self.model(images).float()
            totals[0] += F.cross_entropy(logits, targets, reduction="sum")
            totals[1:3] += metrics.topk_correct(logits, targets, (1, 5))
            totals[3] += len(targets)
        return totals

    def fit(self) -> dict[str, Any]:
        """Train the remaining epochs; rank 0 writes checkpoints, metrics.csv and curves.png after each one."""
        cfg = self.cfg
        if self.dist.main:
            self._write_class_indices()
        for epoch in range(self.start_epoch, cfg.epochs):
            t0 = time.perf_counter()
            lr = self.optimizer.param_groups[0]["lr"]
            train_totals = self.train_epoch(epoch)
            train_s = time.perf_counter() - t0
            distributed.broadcast_buffers(self.model, self.dist)
            val_totals = self.evaluate()
            # Reduced where the counts live: nccl takes CUDA tensors only, gloo CPU ones.
            summed = distributed.all_sum(torch.cat([train_totals, val_totals]), self.dist).cpu().tolist()
            loss, seen, bad_train, waited, vloss, top1, top5, vseen, bad_val = summed
            if seen == 0:
                raise InputError(f"{Path(cfg.data) / 'train'}: no train image could be read in epoch {epoch + 1}"
                                   f" ({int(bad_train)} skipped)")
            row = {"epoch": epoch + 1, "train_loss": loss / max(seen, 1), "val_loss": vloss / max(vseen, 1),
                   "val_top1": top1 / max(vseen, 1), "val_top5": top5 / max(vseen, 1),
                   "lr": lr, "images_per_s": seen / train_s,
                   "data_wait_s": waited / self.dist.world, "train_s": train_s,
                   "skipped_images": int(bad_train + bad_val), "epoch_s": time.perf_counter() - t0}
            self.history.append(row)
            best = row["val_top1"] > self.best_top1
            if best:
                self.best_top1 = row["val_top1"]
            if self.dist.main:
                self._save(epoch + 1, best)
                print(f"epoch {epoch + 1}/{cfg.epochs}: train loss {row['train_loss']:.4f},"
                      f" val loss {row['val_loss']:.4f},"
                      f" top-1 {100 * row['val_top1']:.2f}%, top-5 {100 * row['val_top5']:.2f}%,"
                      f" {row['images_per_s']:.0f} img/s" + (", best so far" if best else "")
                      + (f", {row['skipped_images']} images skipped" if row["skipped_images"] else ""), flush=True)
        return {"best_top1": self.best_top1, "epochs": cfg.epochs, "history": self.history}

    def _save(self, epoch: int, best: bool) -> None:
        obj = runstate.payload(model=self.model, spec_name=self.spec.name, spec_data=self.spec.data,
                               classes=self.classes,
                               config=asdict(self.cfg), optimizer=self.optimizer, scheduler=self.scheduler,
                               scaler=self.scaler, epoch=epoch, best_top1=self.best_top1, history=self.history)
        last = self.out / "last.pt"
        kept = (f"the previous checkpoint {last} (epoch {self.saved_epoch}) was kept; make room and continue with"
                f" `resnet-spec train --resume {self.out}`" if self.saved_epoch else "no epoch has been saved")
        # best.pt first: a kill between the two leaves last.pt one epoch behind, and resuming redoes that epoch.
        runstate.save([self.out / "best.pt", last] if best else [last], obj, kept)
        self.saved_epoch = epoch
        metrics.write_csv(self.out / "metrics.csv", self.history)
        metrics.plot_curves(self.out / "curves.png", self.history)

    def _write_class_indices(self) -> None:
        # The seed's class_indices.json: {"0": "classname", ...}
        text = json.dumps({str(i): c for i, c in enumerate(self.classes)}, indent=4).encode()
        atomic_write(self.out / "class_indices.json", lambda f: f.write(text))


def train(cfg: TrainConfig, spec: ResNetSpec, resume: dict[str, Any] | None = None) -> dict[str, Any]:
    """Check the data, set up (DDP under torchrun), train, and return the run's summary."""
    train_split, val_split = data.scan_dataset(cfg.data)
    if resume is not None and tuple(resume["classes"]) != train_split.classes:
        raise InputError(f"{cfg.data}: classes {list(train_split.classes)} differ from the run's {resume['classes']}")
    dist = distributed.from_env()
    created = dist.main and not Path(cfg.out).exists()
    if dist.main:
        Path(cfg.out).mkdir(parents=True, exist_ok=True)
        # A run killed while writing leaves atomic_write's temp file behind (the target itself is intact).
        for stale in Path(cfg.out).glob(".*.tmp"):
            stale.unlink(missing_ok=True)
    device = distributed.pick_device(cfg.device, dist)
    distributed.init(dist, device)
    try:
        starts = distributed.all_gather_int(int(resume["epoch"]) if resume is not None else 0, dist, device)
        if len(set(starts)) > 1:  # each rank read --out/last.pt itself, or found none
            raise InputError(f"{cfg.out}: the ranks would start from different epochs ({starts}, by rank); on several"
                             " machines the run folder must be one they all share")
        run = Run(cfg, spec, train_split, val_split, resume, dist)
        if dist.main:
            print(f"training {run.spec.name} on {device}" + (f" x{dist.world} ranks" if dist.enabled else "")
                  + f": {len(train_split.samples)} train / {len(val_split.samples)} val images,"
                  f" {len(train_split.classes)} classes, epochs {run.start_epoch + 1}..{cfg.epochs}\n{run.data_note}",
                  flush=True)
            for note in run.weights_notes:
                print(f"weights: {note}", flush=True)
            if cfg.freeze:
                print(f"frozen: the stem and the first {cfg.freeze} stage(s), BatchNorm statistics included")
        summary = run.fit()
        # The DDP model and its reducer hold gloo work objects; freed before the group is destroyed, not at
        # interpreter exit, where one rank once aborted ("terminate called without an active exception").
        del run
        gc.collect()
    except RuntimeError as e:
        distributed.shutdown(dist, wait=False)
        if created:
            _remove_unused_run_folder(Path(cfg.out))
        if dist.enabled and distributed.lost_peer(e):
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise PeerError(f"rank {dist.rank}: another rank of the run stopped ({first}); under torchrun with "
                            "--max-restarts the group restarts and resumes from last.pt") from None
        raise
    except BaseException:
        distributed.shutdown(dist, wait=False)
        if created:
            _remove_unused_run_folder(Path(cfg.out))
        raise
    distributed.shutdown(dist, wait=True)
    return {**summary, "main": dist.main}  # only the main process reports the run


def _remove_unused_run_folder(out: Path) -> None:
    """Remove a run folder this run created but never saved a checkpoint in; anything else in it is kept."""
    if (out / "last.pt").exists():
        return
    for name in ("class_indices.json",):
        (out / name).unlink(missing_ok=True)
    for stale in out.glob(".*.tmp"):
        stale.unlink(missing_ok=True)
    try:
        out.rmdir()
    except OSError:  # something else is in it: not ours to remove
        pass
