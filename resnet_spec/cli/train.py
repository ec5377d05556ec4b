"""resnet-spec train: train a spec on an image folder (train/ and val/), or resume a run."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InputError
from ..registry import lookup
from ..train.optimizers import OPTIMIZERS

if TYPE_CHECKING:
    from argparse import Namespace

    from ..spec.types import ResNetSpec
    from ..train.loop import TrainConfig
    from .common import Subparsers

# Options a resumed run may change: they alter neither the maths nor the data order.
RESUMABLE = ("epochs", "workers", "device", "data")


def register(sub: Subparsers) -> None:
    from .common import add_command, device_name, float_range, int_range, positive_int, seed
    p = add_command(sub, "train", "Train a spec on an image folder with train/ and val/ class subfolders.",
                    "  resnet-spec train specs/resnet18.yaml --data flowers --out runs/r18 --epochs 30\n"
                    "  resnet-spec train specs/resnet10_cifar.yaml --data digits --image-size 32"
                    " --optimizer adamw --lr 3e-3\n"
                    "  resnet-spec train --resume runs/r18 --epochs 40\n"
                    "  torchrun --nproc_per_node=4 -m resnet_spec train resnet50 --data imagenet --amp bf16")
    p.add_argument("spec", nargs="?", metavar="FILE|NAME", help="a spec file or shipped spec name (not with --resume)")
    p.add_argument("--data", metavar="DIR", help="dataset folder holding train/ and val/, each of class subfolders")
    p.add_argument("--out", metavar="RUN_DIR", help="where checkpoints and logs go (default: runs/<spec name>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last.pt")
    p.add_argument("--image-size", type=positive_int, metavar="N", help="training crop size in pixels (default: 224)")
    p.add_argument("--epochs", type=int_range(1, 100_000), metavar="N", help="total epochs (default: 30)")
    p.add_argument("--batch-size", type=positive_int, metavar="N", help="images per step per process (default: 128)")
    p.add_argument("--workers", type=int_range(0, 256), metavar="N",
                   help="data-loading processes per training process (default: 4)")
    p.add_argument("--optimizer", choices=tuple(OPTIMIZERS), help="default: sgd (momentum 0.9)")
    p.add_argument("--lr", type=float_range(0, 1e3, low_open=True),
                   help="peak learning rate, more than 0 (default: 0.1)")
    p.add_argument("--weight-decay", type=float_range(0, 1e3), metavar="WD", help="default: 1e-4")
    p.add_argument("--schedule", choices=("cosine", "step", "none"),
                   help="lr decay after warmup: cosine, step (x0.1 after each third) or none (default: cosine)")
    p.add_argument("--warmup", type=int_range(0, 100_000), metavar="EPOCHS",
                   help="epochs of linear lr warmup, fewer than --epochs (default: 0)")
    p.add_argument("--label-smoothing", type=float_range(0, 1, high_open=True), metavar="EPS",
                   help="0 to below 1 (default: 0)")
    p.add_argument("--seed", type=seed, help="seed for weights, data order and augmentation (default: 0)")
    p.add_argument("--device", type=device_name,
                   help="auto, cpu, cuda or cuda:N (default: auto; under torchrun, cuda:LOCAL_RANK)")
    p.add_argument("--amp", choices=("none", "bf16", "fp16"),
                   help="autocast precision: bf16 (CUDA or CPU) or fp16 (CUDA only, with a gradient scaler)")
    p.add_argument("--channels-last", action="store_true", default=None, help="train in channels_last memory format")
    p.add_argument("--min-scale", type=float_range(0, 1, low_open=True), metavar="S",
                   help="smallest area fraction of RandomResizedCrop (default: 0.08, torchvision's)")
    p.add_argument("--no-flip", dest="hflip", action="store_false", default=None,
                   help="no random horizontal flip (for data where mirroring changes the class, e.g. digits)")
    p.add_argument("--cache", choices=("auto", "on", "off"),
                   help="decode the images once into memory on the training device and crop whole batches there:"
                        " auto does it when the train images share one size and all fit in 1 GiB (default: auto)")
    p.add_argument("--weights", metavar="CKPT",
                   help="fine-tune: start from these weights (a checkpoint, run folder, state_dict in any common "
                        "wrapping, .safetensors or Hugging Face folder); a head of another size is re-initialised")
    p.add_argument("--freeze", type=int_range(0, 8), metavar="N",
                   help="fine-tune: freeze the stem and the first N stages, BatchNorm statistics included (default: 0)")
    p.add_argument("--head-lr-scale", type=float_range(0, 1e6, low_open=True), metavar="X",
                   help="the classifier's learning rate as a multiple of --lr (default: 1)")
    p.set_defaults(func=run)


def _given(args: Namespace) -> dict[str, Any]:
    """The training options given on the command line (argparse defaults are None, so absent ones are absent)."""
    from ..train.loop import TrainConfig
    names = [f for f in TrainConfig.__dataclass_fields__ if f not in ("spec", "data", "out")] + ["data"]
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def _check_before_work(cfg: TrainConfig, spec: ResNetSpec) -> None:
    """Usage and size errors found before a run folder, a data loader or a model is made."""
    from .common import UsageError, check_device, check_input_size
    if cfg.warmup >= cfg.epochs and cfg.warmup:
        raise UsageError(f"argument --warmup: {cfg.warmup} warmup epochs leave none of the {cfg.epochs} epochs "
                         "to train at the full rate; give fewer than --epochs")
    if cfg.device != "auto":
        check_device(cfg.device)
    check_input_size(spec, cfg.image_size, "--image-size")
    from ..train.loop import check_trainable
    check_trainable(spec)
    if cfg.freeze > len(spec.stages):
        raise UsageError(f"argument --freeze: {cfg.freeze} stages, but {spec.name} has {len(spec.stages)}")
    if cfg.weights and not Path(cfg.weights).is_dir():  # a folder is a train run or a Hugging Face model
        from .common import check_readable
        check_readable(cfg.weights)


def require(command: str, modules: tuple[str, ...]) -> None:
    """Refuse with one line when an optional dependency (not in the core install) is missing."""
    import importlib.util
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise InputError(f"{command} needs {' and '.join(missing)}: pip install {' '.join(missing)}")


def run(args: Namespace) -> int:
    require("resnet-spec train", ("tqdm", "matplotlib"))
    given = _given(args)
    if args.resume:
        cfg, spec, resume = _resume(args, given)
    else:
        if not args.spec or not args.data:
            raise InputError("give a SPEC and --data DIR (or --resume RUN_DIR)")
        from ..api import load_spec
        from ..train.loop import TrainConfig
        spec = load_spec(args.spec)
        out = args.out or str(Path("runs") / spec.name)
        cfg = TrainConfig(spec=str(args.spec), data=str(args.data), out=out,
                          **{k: v for k, v in given.items() if k != "data"})
        resume = None
        if (Path(out) / "last.pt").exists():
            from ..train.distributed import restart_count
            if not restart_count():
                raise InputError(f"{out} already holds a run (last.pt); continue it with --resume {out}"
                                 " or pick another --out")
            cfg, spec, resume = _after_restart(cfg)
    _check_before_work(cfg, spec)
    from ..train.loop import train
    summary = train(cfg, spec, resume)
    if summary.get("main", True) and summary["history"] and summary["best_top1"] >= 0:  # once, under torchrun
        print(f"best val top-1 {100 * summary['best_top1']:.2f}%; checkpoints in {cfg.out}")
    return 0


def _resume(args: Namespace, given: dict[str, Any]) -> tuple[TrainConfig, ResNetSpec, dict[str, Any]]:
    """The config, spec and state saved in RUN_DIR/last.pt, with the few options a resume may change."""
    from dataclasses import replace
    if args.spec:
        raise InputError("--resume takes the spec from RUN_DIR/last.pt; drop the SPEC argument")
    changed = sorted(k for k in given if k not in RESUMABLE)
    if changed:
        flags = ", ".join("--" + k.replace("_", "-") for k in changed)
        raise InputError(f"cannot change {flags} when resuming (only --epochs, --workers, --device, --data)")
    if args.out and Path(args.out) != Path(args.resume):
        raise InputError("--resume writes into its own RUN_DIR; drop --out")
    if not Path(args.resume).is_dir():
        raise InputError(f"{args.resume}: no such run folder")
    cfg, spec, obj = _saved_run(Path(args.resume))
    cfg = replace(cfg, out=str(args.resume), **{k: v for k, v in given.items()})
    return cfg, spec, obj


def _after_restart(cfg: TrainConfig) -> tuple[TrainConfig, ResNetSpec, dict[str, Any]]:
    """Under a torchrun restart (TORCHELASTIC_RESTART_COUNT > 0), the run this command line began, from its last.pt.

    The elastic agent reruns the command as it was given, so every setting must match the saved run's; the
    resolved --cache is the saved one. A run folder holding another run is refused as without a restart.
    """
    from dataclasses import asdict, replace

    from ..train.distributed import from_env, restart_count
    saved, spec, obj = _saved_run(Path(cfg.out))
    ours, theirs = asdict(cfg), asdict(saved)
    differ = [k for k in ours if k not in (*RESUMABLE, "out") and ours[k] != theirs[k]
              and not (k == "cache" and ours[k] == "auto")]
    if differ:
        flags = ", ".join("--" + k.replace("_", "-") for k in differ)
        raise InputError(f"{cfg.out} already holds another run (last.pt differs in {flags}); torchrun restarted"
                         " this command but it cannot continue that run: pick another --out")
    if from_env().main:
        print(f"torchrun restart {restart_count()}: continuing the run in {cfg.out} from last.pt"
              f" (epoch {int(obj['epoch'])})", flush=True)
    return replace(saved, out=cfg.out, **{k: ours[k] for k in RESUMABLE}), spec, obj


def _saved_run(run_dir: Path) -> tuple[TrainConfig, ResNetSpec, dict[str, Any]]:
    """The settings, spec and state saved in RUN_DIR/last.pt."""
    from ..model.checkpoint import load_file, spec_from_checkpoint
    from ..train.loop import TrainConfig
    path = run_dir / "last.pt"
    obj = load_file(path)
    if not isinstance(obj.get("train_config"), dict) or "optimizer" not in obj:
        raise InputError(f"{path}: not a training checkpoint (no optimizer state);"
                         " was it written by `resnet-spec train`?")
    spec = spec_from_checkpoint(obj, path)
    try:
        # Runs saved before --cache existed all read their images from disk.
        cfg = TrainConfig(**{"cache": "off", **obj["train_config"]})
        lookup(OPTIMIZERS, "optimizer", cfg.optimizer)
    except (TypeError, ValueError) as e:
        raise InputError(f"{path}: unreadable training settings ({e})") from None
    return cfg, spec, obj
