"""train / predict / evaluate on real data (sklearn's digits): checkpoints, exact resume, kills, torchrun, bad data."""
from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from helpers import FAST_TRAIN, ROOT, SPECS, TRAIN_ENV, cli_choices

SPEC = SPECS / "resnet10_cifar.yaml"
FAST = FAST_TRAIN
ENV = TRAIN_ENV

pytestmark = pytest.mark.usefixtures("one_thread")


def _copy(digits: Path, dest: Path) -> Path:
    shutil.copytree(digits, dest)
    return dest


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _rows(run: Path) -> list[dict]:
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def _same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _train_here(args: list) -> None:
    """`resnet-spec train` in this process (one torch thread, as the subprocesses have)."""
    from resnet_spec.cli.main import main
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train", *map(str, args)]) == 0
    finally:
        torch.set_num_threads(old)


@pytest.fixture(scope="module")
def straight(digits, tmp_path_factory) -> Path:
    """A two-epoch run with a constant lr, the reference that resumed runs must reproduce bit for bit."""
    run = tmp_path_factory.mktemp("straight") / "run"
    _train_here([SPEC, "--data", digits, "--out", run, "--epochs", 2, "--schedule", "none", *FAST])
    return run


@pytest.fixture(scope="module")
def straight_cosine(digits, tmp_path_factory):
    """Two epochs with warmup and a cosine schedule, per --cache: a killed run must restore the scheduler to match."""
    runs = {}

    def run_for(cache: str) -> Path:
        if cache not in runs:
            runs[cache] = tmp_path_factory.mktemp(f"straight_cosine_{cache}") / "run"
            _train_here([SPEC, "--data", digits, "--out", runs[cache], "--epochs", 2, "--schedule", "cosine",
                         "--warmup", 1, "--cache", cache, *FAST])
        return runs[cache]
    return run_for


def test_train_writes_checkpoints_logs_and_class_indices(straight):
    last, best = _load(straight / "last.pt"), _load(straight / "best.pt")  # weights_only=True loads both
    assert last["epoch"] == 2 and last["classes"] == [str(d) for d in range(10)]
    assert last["state_dict"]["fc.weight"].shape == (10, 128)
    for key in ("spec", "optimizer", "scheduler", "scaler", "rng", "train_config", "history"):
        assert key in last, key
    assert isinstance(last["rng"]["torch"], torch.Tensor)
    rows = _rows(straight)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert float(rows[-1]["val_top1"]) > 0.5  # two epochs on real digits learn something
    best_epoch = max(rows, key=lambda r: float(r["val_top1"]))["epoch"]
    assert best["epoch"] == int(best_epoch)
    assert json.loads((straight / "class_indices.json").read_text()) == {str(i): str(i) for i in range(10)}
    assert (straight / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(straight.glob(".*.tmp"))


def test_checkpoints_record_the_data_path_taken_and_old_ones_resume_from_disk(digits, straight, tmp_path, cli):
    assert _load(straight / "last.pt")["train_config"]["cache"] == "on"  # auto, resolved: resumes never re-decide
    run = tmp_path / "run"
    _train_here([SPEC, "--data", digits, "--out", run, "--epochs", 1, "--cache", "off", *FAST])
    ck = _load(run / "last.pt")
    del ck["train_config"]["cache"]  # as written before --cache existed, when every run read from disk
    torch.save(ck, run / "last.pt")
    code, out, err = cli(["train", "--resume", run, "--epochs", 2])
    assert code == 0, err
    assert "read from disk" in out and _load(run / "last.pt")["train_config"]["cache"] == "off"


def test_resume_continues_exactly(digits, straight, tmp_path):
    run = tmp_path / "run"
    _train_here([SPEC, "--data", digits, "--out", run, "--epochs", 1, "--schedule", "none", *FAST])
    _train_here(["--resume", run, "--epochs", 2])
    a, b = _load(straight / "last.pt"), _load(run / "last.pt")
    _same_state(a["state_dict"], b["state_dict"])
    assert a["optimizer"]["state"][0]["exp_avg"].equal(b["optimizer"]["state"][0]["exp_avg"])
    assert [r["train_loss"] for r in _rows(run)] == [r["train_loss"] for r in _rows(straight)]


# The child kills itself with SIGKILL partway through epoch 2: from inside the image loader (--cache off and
# workers 0, so the loader runs in the training process), inside the batch-wise crop of the in-memory path, or
# inside the writer of epoch 2's last.pt.
KILLER = textwrap.dedent("""
    import os, signal, sys
    import resnet_spec.train.data as data, resnet_spec.train.loaders as loaders, resnet_spec.train.runstate as runstate
    when, after = sys.argv[1], int(sys.argv[2])
    calls = {"load": 0, "augment": 0, "save": 0}
    real_load, real_crop, real_write = data.load_image, loaders.BatchRandomResizedCrop.__call__, runstate.atomic_write
    def counted(what):
        calls[what] += 1
        if when == what and calls[what] > after:
            os.kill(os.getpid(), signal.SIGKILL)
    def load_image(path):
        counted("load")
        return real_load(path)
    def crop(self, images):
        counted("augment")
        return real_crop(self, images)
    def atomic_write(path, write):
        calls["save"] += 1
        if when == "save" and calls["save"] > after:
            return real_write(path, lambda f: (f.write(b"half a checkpoint"), os.kill(os.getpid(), signal.SIGKILL)))
        return real_write(path, write)
    data.load_image, loaders.BatchRandomResizedCrop.__call__, runstate.atomic_write = load_image, crop, atomic_write
    from resnet_spec.cli.main import main
    sys.exit(main(sys.argv[3:]))
""")


# load: 120 train + 30 val images in epoch 1, then 50 more; augment: 4 batches of epoch 1, then 2 more;
# save: best.pt and last.pt of epoch 1, then die.
@pytest.mark.parametrize("when, after, cache", [("load", 200, "off"), ("augment", 6, "on"), ("save", 2, "on")])
def test_sigkill_mid_epoch_then_resume(digits, straight_cosine, tmp_path, when, after, cache):
    run = tmp_path / "run"
    argv = ["train", SPEC, "--data", digits, "--out", run, "--epochs", 2, "--schedule", "cosine", "--warmup", 1,
            "--cache", cache, *FAST]
    r = subprocess.run([sys.executable, "-c", KILLER, when, str(after), *map(str, argv)], capture_output=True,
                       text=True, env=ENV, cwd=ROOT, timeout=300)
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert _load(run / "last.pt")["epoch"] == 1  # intact, from the last completed epoch
    assert len(_rows(run)) == 1
    if when == "save":
        assert list(run.glob(".*.tmp"))  # the half-written temp file is all the kill left behind
    _train_here(["--resume", run])
    assert not list(run.glob(".*.tmp"))
    reference = straight_cosine(cache)
    a, b = _load(reference / "last.pt"), _load(run / "last.pt")
    _same_state(a["state_dict"], b["state_dict"])
    assert a["scheduler"] == b["scheduler"] and a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]
    assert [r["val_loss"] for r in _rows(run)] == [r["val_loss"] for r in _rows(reference)]


def test_classes_come_from_data_with_sgd_bf16_and_channels_last(digits, tmp_path, cli):
    data = _copy(digits, tmp_path / "three")
    for split in ("train", "val"):
        for d in range(3, 10):
            shutil.rmtree(data / split / str(d))
    run = tmp_path / "run"
    code, out, err = cli(["train", SPEC, "--data", data, "--out", run, "--epochs", 1, *FAST,
                          "--amp", "bf16", "--channels-last", "--optimizer", "sgd", "--lr", "0.05",
                          "--schedule", "step"])
    assert code == 0, err
    ck = _load(run / "last.pt")
    assert "momentum_buffer" in ck["optimizer"]["state"][0] and ck["train_config"]["amp"] == "bf16"
    assert ck["classes"] == ["0", "1", "2"] and ck["state_dict"]["fc.weight"].shape[0] == 3
    assert ck["spec"]["head"]["num_classes"] == 3
    assert "top-1" in out


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("amp, cache", [("bf16", "on"), ("fp16", "off")])
def test_cuda_training_with_amp_resumes_exactly(digits, tmp_path, monkeypatch, amp, cache):
    # cuDNN's fastest kernels include nondeterministic ones; with them any two CUDA runs differ in the last bits.
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    args = [SPEC, "--data", digits, "--epochs", 2, "--schedule", "none", "--cache", cache, "--amp", amp,
            "--channels-last", *FAST[:-4], "--device", "cuda", "--seed", "3"]
    straight, run = tmp_path / "straight", tmp_path / "run"
    _train_here([*args, "--out", straight])
    _train_here([*args, "--out", run, "--epochs", 1])
    _train_here(["--resume", run, "--epochs", 2])
    a, b = _load(straight / "last.pt"), _load(run / "last.pt")
    assert a["train_config"]["device"] == "cuda" and a["train_config"]["amp"] == amp
    assert (a["scaler"].get("scale") is not None) == (amp == "fp16")  # fp16 trains with a gradient scaler
    assert float(_rows(straight)[-1]["val_top1"]) > 0.3
    _same_state(a["state_dict"], b["state_dict"])


def test_predict_and_evaluate(digits, straight, tmp_path, cli):
    images = [digits / "val" / str(d) / sorted(os.listdir(digits / "val" / str(d)))[0] for d in (0, 4, 7)]
    code, out, err = cli(["predict", straight / "best.pt", *images, "--topk", 3, "--format", "json", "--batch-size", 2])
    assert code == 0, err
    results = json.loads(out)
    assert [r["image"] for r in results] == [str(p) for p in images]
    for r in results:
        probs = [t["probability"] for t in r["top"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
    plot = tmp_path / "cm.png"
    code, out, err = cli(["evaluate", straight / "best.pt", "--data", digits / "val", "--confusion", plot,
                          "--format", "json"])
    assert code == 0, err
    ev = json.loads(out)
    assert ev["images"] == 30 and sum(map(sum, ev["confusion"])) == 30
    assert set(ev["per_class"]) == {str(d) for d in range(10)}
    best_row = max(_rows(straight), key=lambda r: float(r["val_top1"]))
    # evaluate reproduces the val top-1 the training loop logged for the same weights
    assert ev["top1"] == pytest.approx(float(best_row["val_top1"]), abs=1e-6)
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_predict_refuses_mismatched_checkpoints(straight, digits, tmp_path, cli):
    image = next((digits / "val" / "1").iterdir())
    ck = _load(straight / "best.pt")
    bad_classes = tmp_path / "classes.pt"
    torch.save({**ck, "classes": ck["classes"][:9]}, bad_classes)
    code, _, err = cli(["predict", bad_classes, image])
    assert code == 1 and "9 class names but the spec's head has 10 outputs" in err
    bad_spec = tmp_path / "spec.pt"
    wider = {**ck["spec"], "stem": {"type": "cifar", "width": 32}}
    torch.save({**ck, "spec": wider}, bad_spec)
    code, _, err = cli(["predict", bad_spec, image])
    assert code == 1 and "weights do not match the embedded spec" in err and "Traceback" not in err
    code, _, err = cli(["evaluate", straight / "best.pt", "--data", tmp_path])
    assert code == 1 and "no class subfolders" in err


@pytest.mark.parametrize("cache", ["auto", "off"])
def test_corrupt_images_are_reported_skipped_and_counted(digits, tmp_path, cli, cache):
    data = _copy(digits, tmp_path / "data")
    truncated = data / "train" / "3" / "truncated.png"
    truncated.write_bytes(next((data / "train" / "3").iterdir()).read_bytes()[:40])
    garbage = data / "val" / "5" / "garbage.jpg"
    garbage.write_bytes(b"not an image at all")
    run = tmp_path / "run"
    code, out, err = cli(["train", SPEC, "--data", data, "--out", run, "--epochs", 1, "--cache", cache, *FAST])
    assert code == 0, err
    assert ("decoded once into cpu memory" in out) == (cache == "auto")
    assert str(truncated) in err and str(garbage) in err
    assert _rows(run)[0]["skipped_images"] == "2"
    assert "2 images skipped" in out


@pytest.mark.parametrize("cache", ["auto", "off"])
def test_no_readable_train_image_is_an_error(digits, tmp_path, cli, cache):
    data = _copy(digits, tmp_path / "data")
    for image in (data / "train").rglob("*.png"):
        image.write_bytes(b"not an image")
    code, out, err = cli(["train", SPEC, "--data", data, "--out", tmp_path / "run", "--epochs", 2, "--cache", cache,
                          *FAST])
    # In memory the decode finds it before training; from disk, the first epoch does.
    message = "none of the 120 train images could be read" if cache == "auto" else \
        "no train image could be read in epoch 1 (120 skipped)"
    assert code == 1 and message in err and "Traceback" not in err, err


@pytest.mark.parametrize("breakage, message", [
    ("empty_class", "empty class folder"),
    ("no_val", "no val/ folder"),
    ("one_class", "only one class"),
    ("val_classes", "train/ and val/ have different classes"),
])
def test_bad_datasets_fail_before_training(digits, tmp_path, cli, breakage, message):
    data = _copy(digits, tmp_path / "data")
    if breakage == "empty_class":
        for f in (data / "train" / "6").iterdir():
            f.unlink()
    elif breakage == "no_val":
        shutil.rmtree(data / "val")
    elif breakage == "one_class":
        for split in ("train", "val"):
            for d in range(1, 10):
                shutil.rmtree(data / split / str(d))
    else:
        shutil.rmtree(data / "val" / "9")
    run = tmp_path / "run"
    code, out, err = cli(["train", SPEC, "--data", data, "--out", run, *FAST])
    assert code == 1 and message in err and "Traceback" not in err
    assert not run.exists()  # nothing written, nothing trained


def test_refusals(straight, digits, tmp_path, cli):
    code, _, err = cli(["train", SPEC, "--data", digits, "--out", straight, *FAST])
    assert code == 1 and "already holds a run" in err
    code, _, err = cli(["train", "--resume", straight, "--lr", "0.1"])
    assert code == 1 and "cannot change --lr when resuming" in err
    code, _, err = cli(["train", SPEC, "--data", digits, "--out", tmp_path / "r", *FAST, "--amp", "fp16"])
    assert code == 1 and "--amp fp16 needs a CUDA device" in err
    code, _, err = cli(["train", "--resume", tmp_path / "nothing"])
    assert code == 1 and "no such run folder" in err
    code, out, err = cli(["train", "--resume", straight])  # already at --epochs 2: nothing left to do
    assert code == 0 and _load(straight / "last.pt")["epoch"] == 2


def test_optimizers_are_one_table_and_the_cli_offers_it():
    from resnet_spec.train.loop import TrainConfig, make_optimizer
    from resnet_spec.train.optimizers import OPTIMIZERS
    assert cli_choices("train", "--optimizer") == tuple(OPTIMIZERS)
    model = torch.nn.Linear(2, 2)
    made = {name: type(make_optimizer(model, TrainConfig(spec="s", data="d", out="o", optimizer=name)))
            for name in OPTIMIZERS}
    assert made == {"sgd": torch.optim.SGD, "adamw": torch.optim.AdamW, "adam": torch.optim.Adam}


def test_an_unknown_optimizer_is_an_error_not_adam():
    from resnet_spec.train.loop import TrainConfig, make_optimizer
    with pytest.raises(ValueError, match="unknown optimizer 'lion'; known: adam, adamw, sgd"):
        make_optimizer(torch.nn.Linear(2, 2), TrainConfig(spec="s", data="d", out="o", optimizer="lion"))


def test_resuming_a_run_with_an_unknown_optimizer_is_refused(straight, tmp_path, cli):
    run = tmp_path / "run"
    run.mkdir()
    ck = _load(straight / "last.pt")
    ck["train_config"]["optimizer"] = "lion"
    torch.save(ck, run / "last.pt")
    code, _, err = cli(["train", "--resume", run])
    assert code == 1 and "unreadable training settings (unknown optimizer 'lion'" in err
    assert len(err.strip().splitlines()) == 1


def test_lr_schedule():
    from resnet_spec.train.loop import TrainConfig, lr_factor
    cfg = TrainConfig(spec="s", data="d", out="o", epochs=10, warmup=2, schedule="cosine")
    assert lr_factor(0, 5, cfg) == pytest.approx(0.1) and lr_factor(9, 5, cfg) == pytest.approx(1.0)
    assert lr_factor(10, 5, cfg) == pytest.approx(1.0) and lr_factor(30, 5, cfg) == pytest.approx(0.5)
    step = TrainConfig(spec="s", data="d", out="o", epochs=9, schedule="step")
    assert [lr_factor(e * 4, 4, step) for e in (0, 3, 6, 8)] == pytest.approx([1, 0.1, 0.01, 0.01])


@pytest.mark.parametrize("cache", ["on", "off"])
def test_torchrun_two_processes_on_gloo(digits, tmp_path, cli, cache):
    data = _copy(digits, tmp_path / "data")
    (data / "train" / "4" / "truncated.png").write_bytes(next((data / "train" / "4").iterdir()).read_bytes()[:40])
    run = tmp_path / "run"
    argv = ["-m", "resnet_spec", "train", SPEC, "--data", data, "--out", run, "--epochs", 1, "--cache", cache, *FAST]
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        *map(str, argv)],
                       capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("epoch 1/1:") == 1 and "x2 ranks" in r.stdout, r.stdout  # rank 0 alone reports
    row = _rows(run)[0]
    assert row["skipped_images"] == "1"  # the bad image counted once, though both ranks hold it in memory
    # The val metrics were reduced over both ranks' disjoint halves: evaluating the saved weights
    # in one process gives the same top-1 over all 30 images.
    code, out, err = cli(["evaluate", run / "last.pt", "--data", digits / "val", "--format", "json"])
    assert code == 0, err
    ev = json.loads(out)
    assert ev["images"] == 30 and ev["top1"] == pytest.approx(float(row["val_top1"]), abs=1e-6), (ev, row)


def test_predict_and_evaluate_take_a_run_folder_and_plain_weights_with_a_spec(digits, straight, tmp_path, cli):
    """A run folder stands for its best.pt; a bare state_dict needs --spec and gives the same predictions."""
    image = next((digits / "val" / "3").iterdir())
    code, from_file, err = cli(["predict", straight / "best.pt", image, "--format", "json"])
    assert code == 0, err
    code, from_folder, err = cli(["predict", straight, image, "--format", "json"])
    assert code == 0 and from_folder == from_file, err
    ck = _load(straight / "best.pt")
    spec_file = tmp_path / "net.yaml"
    spec_file.write_text(json.dumps({**ck["spec"], "head": {"num_classes": 10}}))  # JSON is YAML
    plain = tmp_path / "plain.pth"
    torch.save({"model": {"module." + k: v for k, v in ck["state_dict"].items()}}, plain)  # DDP, reference format
    # The checkpoint knows the size it was trained at (16 px); plain weights take the spec's unless told.
    code, out, err = cli(["predict", plain, image, "--format", "json", "--spec", spec_file, "--image-size", 16])
    assert code == 0, err
    assert json.loads(out)[0]["top"][0]["index"] == json.loads(from_file)[0]["top"][0]["index"]
    assert "stripped the 'module.' prefix" in err
    code, _, err = cli(["predict", plain, image])
    assert code == 1 and "plain weights without a spec" in err
    code, out, err = cli(["evaluate", straight, "--data", digits / "val", "--format", "json",
                          "--confusion", tmp_path / "cm.png"])
    assert code == 0 and json.loads(out)["images"] == 30, err


def test_build_takes_a_run_folder_alone_and_swaps_the_head(straight, tmp_path, cli):
    code, out, err = cli(["build", "--weights", straight, "--input-size", 16])
    assert code == 0 and "output 1x10" in out, err
    code, out, err = cli(["build", SPEC, "--weights", straight, "--num-classes", 4, "--input-size", 16])
    assert code == 0 and "output 1x4" in out, err
    assert "re-initialised: 10 classes in the weights, 4 in the model" in err
    seven = tmp_path / "seven.yaml"
    seven.write_text(f"spec_version: 1\nextends: {SPEC}\nhead: {{num_classes: 7}}\n")
    code, _, err = cli(["build", seven, "--weights", straight / "best.pt", "--input-size", 16])
    assert code == 1 and "the weights have 10 classes: use --num-classes 10" in err


def _subset(digits: Path, dest: Path, keep: tuple[str, ...]) -> Path:
    for split in ("train", "val"):
        for d in keep:
            shutil.copytree(digits / split / d, dest / split / d)
    return dest


def test_fine_tune_from_a_run_freezes_and_resumes_exactly(digits, straight, tmp_path):
    """--weights a 10-class run onto 5 classes: new head, stem and layer1 frozen (stats too), head at 10x lr;
    one epoch then --resume equals two straight epochs bit for bit (a constant lr: --epochs sets the cosine span)."""
    five = _subset(digits, tmp_path / "five", ("5", "6", "7", "8", "9"))
    tune = ["--weights", straight, "--freeze", 1, "--head-lr-scale", 10, "--schedule", "none", *FAST]
    whole, part = tmp_path / "whole", tmp_path / "part"
    _train_here([SPEC, "--data", five, "--out", whole, "--epochs", 2, *tune])
    _train_here([SPEC, "--data", five, "--out", part, "--epochs", 1, *tune])
    _train_here(["--resume", part, "--epochs", 2])
    got, want = _load(part / "last.pt"), _load(whole / "last.pt")
    _same_state(got["state_dict"], want["state_dict"])
    pretrained = _load(straight / "best.pt")["state_dict"]
    sd = want["state_dict"]
    assert sd["fc.weight"].shape == (5, 128)
    for k in sd:  # the stem and layer1 are exactly the pretrained ones, BatchNorm statistics included
        if k.split(".")[0] in ("conv1", "bn1", "layer1"):
            assert torch.equal(sd[k], pretrained[k]), k
    assert not torch.equal(sd["layer2.0.conv1.weight"], pretrained["layer2.0.conv1.weight"])
    cfg = want["train_config"]
    assert (cfg["freeze"], cfg["head_lr_scale"]) == (1, 10.0)
    groups = want["optimizer"]["param_groups"]
    assert [g["initial_lr"] for g in groups] == pytest.approx([0.003, 0.03])


def test_fine_tune_refuses_bad_settings_before_work(digits, straight, tmp_path, cli):
    code, _, err = cli(["train", SPEC, "--data", digits, "--out", tmp_path / "r", "--freeze", 9, *FAST])
    assert code == 2 and "--freeze" in err
    code, _, err = cli(["train", SPEC, "--data", digits, "--out", tmp_path / "r", "--freeze", 5, *FAST])
    assert code == 2 and "5 stages, but resnet10_cifar has 4" in err
    code, _, err = cli(["train", SPEC, "--data", digits, "--out", tmp_path / "r", "--weights", tmp_path / "no.pt",
                        *FAST])
    assert code == 1 and "no.pt: no such file" in err
    assert not (tmp_path / "r").exists()


def test_fine_tuning_finds_a_preact_nets_stem_stages_and_head():
    """--freeze and --head-lr-scale on a pre-activation net (timm's names: stem, stages.N, head.fc)."""
    from resnet_spec import build_model
    from resnet_spec.train import finetune
    model = build_model("preact_resnet164", init="none")
    frozen = finetune.freeze(model, 1)
    assert frozen == [model.stem, model.stages[0]]
    names = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert names and all(n.startswith(("stem.", "stages.0.")) for n in names)
    groups = finetune.param_groups(model, 0.1, 10.0)
    assert [g["lr"] for g in groups] == [0.1, 1.0]
    assert {id(p) for p in groups[1]["params"]} == {id(model.head.fc.weight), id(model.head.fc.bias)}


def test_inputs_are_normalised_with_the_specs_mean_and_std():
    """A resnetv2 spec says mean and std 0.5 (timm's ResNetV2 weights); the ImageNet statistics stay the default."""
    import torch

    from resnet_spec.api import load_spec
    from resnet_spec.train import data
    images = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    t = load_spec("resnetv2_50").eval_transform
    assert torch.equal(data.normalize(images, torch.device("cpu"), mean_std=(t.mean, t.std)), torch.ones(1, 3, 2, 2))
    default = data.normalize(images, torch.device("cpu"))
    assert torch.allclose(default[0, :, 0, 0], (1 - torch.tensor(data.MEAN)) / torch.tensor(data.STD))
    assert load_spec("resnet50").eval_transform.mean == data.MEAN
