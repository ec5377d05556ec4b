"""Training survives faults: a worker killed under torchrun, two "nodes" on one machine, a full disk."""
from __future__ import annotations

import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
import torch

from helpers import FAST_TRAIN, ROOT, SPECS, TINY, TRAIN_ENV, no_traceback

SPEC = SPECS / "resnet10_cifar.yaml"
# The digits fixture's 12 train + 3 val images per digit: with two ranks and batches of 32, two steps per rank
# per epoch.
FAST = [*FAST_TRAIN, "--cache", "on", "--epochs", "2"]
ENV = TRAIN_ENV
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
TIMEOUT = 150

pytestmark = pytest.mark.usefixtures("one_thread")


def _train_argv(digits: Path, out: Path | str) -> list[str]:
    return ["train", str(SPEC), "--data", str(digits), "--out", str(out), *FAST]


class Torchrun:
    """torchrun started in its own process group, its output in files (two runs that wait on each other must not
    block on a full pipe), so that a hung run's workers can be stopped with their agent."""

    def __init__(self, args: list[str], cwd: Path = ROOT, env: dict[str, str] = ENV) -> None:
        self.out, self.err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen([*TORCHRUN, *args], stdout=self.out, stderr=self.err, text=True, env=env,
                                     cwd=cwd, start_new_session=True)

    def result(self, code: int) -> subprocess.CompletedProcess[str]:
        self.out.seek(0)
        self.err.seek(0)
        return subprocess.CompletedProcess(self.proc.args, code, self.out.read(), self.err.read())


def _finish(runs: list[Torchrun]) -> list[subprocess.CompletedProcess[str]]:
    """Wait for each run; on a timeout or any error, kill every run's whole process group."""
    try:
        return [r.result(r.proc.wait(TIMEOUT)) for r in runs]
    finally:
        for r in runs:
            if r.proc.poll() is None:
                os.killpg(r.proc.pid, signal.SIGKILL)
                r.proc.wait()
            r.out.close()
            r.err.close()


def _torchrun(args: list[str], env: dict[str, str] = ENV) -> subprocess.CompletedProcess[str]:
    return _finish([Torchrun(args, env=env)])[0]


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _same_weights(a: Path, b: Path) -> None:
    sa, sb = _load(a)["state_dict"], _load(b)["state_dict"]
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


@pytest.fixture(scope="module")
def two_ranks(digits, tmp_path_factory) -> Path:
    """The reference: two epochs on one node with two gloo processes, never interrupted."""
    run = tmp_path_factory.mktemp("two_ranks") / "run"
    r = _torchrun(["--standalone", "--nproc_per_node=2", "-m", "resnet_spec", *_train_argv(digits, run)])
    assert r.returncode == 0, r.stderr[-3000:]
    assert _load(run / "last.pt")["epoch"] == 2
    return run


# Rank 1 of the first attempt SIGKILLs itself as it crops its 4th batch: the second step of epoch 2. Rank 0 has
# saved epoch 1 by then (rank 1's first step of epoch 2 waited for rank 0's gradients), and cannot finish epoch 2.
KILL_RANK_1 = textwrap.dedent("""
    import os, signal, sys
    import resnet_spec.train.loaders as loaders
    if os.environ["RANK"] == "1" and os.environ["TORCHELASTIC_RESTART_COUNT"] == "0":
        real_crop, calls = loaders.BatchRandomResizedCrop.__call__, [0]
        def crop(self, images):
            calls[0] += 1
            if calls[0] == 4:
                os.kill(os.getpid(), signal.SIGKILL)
            return real_crop(self, images)
        loaders.BatchRandomResizedCrop.__call__ = crop
    from resnet_spec.cli.main import main
    sys.exit(main(sys.argv[1:]))
""")


def test_torchrun_restarts_a_killed_rank_and_resumes_exactly(digits, two_ranks, tmp_path):
    script = tmp_path / "kill_rank_1.py"
    script.write_text(KILL_RANK_1)
    run = tmp_path / "run"
    r = _torchrun(["--standalone", "--nproc_per_node=2", "--max-restarts=1", str(script), *_train_argv(digits, run)])
    assert r.returncode == 0, r.stderr[-3000:]
    # The group was restarted (the agent reports rank 1's -9, or rank 0's lost connection, whichever it sees first),
    # and epoch 1 ran once: the restarted group continued from last.pt instead of starting over.
    assert "torchrun restart 1: continuing the run in" in r.stdout and "from last.pt (epoch 1)" in r.stdout, r.stdout
    assert r.stdout.count("epoch 1/2:") == 1 and r.stdout.count("epoch 2/2:") == 1, r.stdout
    # The surviving rank reports its lost peer as such (exit 1 before the restart), never as a bug.
    assert "This is a bug" not in r.stderr and "internal error" not in r.stderr, r.stderr[-3000:]
    assert _load(run / "last.pt")["epoch"] == 2
    assert not list(run.glob(".*.tmp"))
    _same_weights(two_ranks / "last.pt", run / "last.pt")


def test_a_restart_does_not_continue_another_run(digits, two_ranks, tmp_path, cli, monkeypatch):
    """A restarted command whose --out holds a run with other settings is refused, not silently continued."""
    run = shutil.copytree(two_ranks, tmp_path / "run")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    argv = _train_argv(digits, run)
    argv[argv.index("--lr") + 1] = "0.01"
    code, out, err = cli(argv)
    assert code == 1 and out == ""
    assert err == (f"resnet-spec train: error: {run} already holds another run (last.pt differs in --lr);"
                   " torchrun restarted this command but it cannot continue that run: pick another --out\n")
    monkeypatch.delenv("TORCHELASTIC_RESTART_COUNT")
    code, _, err = cli(_train_argv(digits, run))
    assert code == 1 and "already holds a run (last.pt); continue it with --resume" in err


# Rank 1 reads another run folder, as a rank on a machine that does not share --out would.
OTHER_FOLDER_ON_RANK_1 = textwrap.dedent("""
    import os, sys
    argv = sys.argv[1:]
    if os.environ["RANK"] == "1":
        argv[argv.index("--resume") + 1] = os.environ["OTHER_RUN"]
    from resnet_spec.cli.main import main
    sys.exit(main(argv))
""")


def test_ranks_that_would_start_from_different_epochs_are_refused(two_ranks, tmp_path):
    run, other = shutil.copytree(two_ranks, tmp_path / "run"), shutil.copytree(two_ranks, tmp_path / "other")
    ck = _load(other / "last.pt")
    torch.save({**ck, "epoch": 1}, other / "last.pt")
    script = tmp_path / "other_folder.py"
    script.write_text(OTHER_FOLDER_ON_RANK_1)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    r = _torchrun(["--standalone", "--nproc_per_node=2", str(script), "train", "--resume", str(run), "--epochs", "3"],
                  env={**ENV, "OTHER_RUN": str(other)})
    assert r.returncode != 0
    assert (f"resnet-spec train: error: {run}: the ranks would start from different epochs ([2, 1], by rank); on"
            " several machines the run folder must be one they all share\n") in r.stderr, r.stderr[-3000:]
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_nodes_on_localhost_match_one_node(digits, two_ranks, tmp_path):
    """Two torchrun agents, one process each, meet through c10d rendezvous; each works in its own folder and
    gives a relative --out, so the folder that holds a run is the one global rank 0 wrote, and only that one."""
    port = _free_port()
    nodes = [tmp_path / "node_a", tmp_path / "node_b"]
    for node in nodes:
        node.mkdir()
    results = _finish([Torchrun(["--nnodes=2", "--nproc_per_node=1", "--rdzv-backend=c10d",
                                 f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=faults", "--local-addr=127.0.0.1",
                                 "--max-restarts=0", "-m", "resnet_spec", *_train_argv(digits, "run")], cwd=node)
                       for node in nodes])
    for r in results:
        assert r.returncode == 0, r.stderr[-3000:]
    written = [node for node in nodes if any(node.iterdir())]
    assert len(written) == 1, [sorted(p.name for p in node.rglob("*")) for node in nodes]
    run = written[0] / "run"
    stdout = results[nodes.index(written[0])].stdout
    assert "x2 ranks" in stdout and stdout.count("epoch 2/2:") == 1, stdout
    assert "epoch" not in results[1 - nodes.index(written[0])].stdout  # the other node's rank reports nothing
    _same_weights(two_ranks / "last.pt", run / "last.pt")


@pytest.fixture(scope="module")
def one_process(digits, tmp_path_factory) -> Path:
    """The reference for the in-process runs: two epochs in this process, never interrupted."""
    from resnet_spec.cli.main import main
    run = tmp_path_factory.mktemp("one_process") / "run"
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(_train_argv(digits, run)) == 0
    finally:
        torch.set_num_threads(old)
    return run


class FullDisk:
    """A file that takes `room` more bytes, then fails as a full disk does."""

    def __init__(self, f, room: int) -> None:
        self.f, self.room = f, room

    def write(self, data: bytes) -> int:
        if len(data) > self.room:
            self.f.write(data[:self.room])
            self.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.f.write(data)


@pytest.mark.parametrize("which", ["best.pt", "last.pt"])
def test_a_full_disk_keeps_the_previous_checkpoint(digits, one_process, tmp_path, cli, monkeypatch, which):
    """Epoch 2's checkpoint write runs out of space halfway (best.pt goes first, then last.pt): the run stops with
    exit 1 and one line that names the file, says the disk is full and that epoch 1's last.pt was kept; that
    last.pt is intact, no temp file is left, and once there is room again --resume finishes the run."""
    import resnet_spec.train.runstate as runstate
    real_write, writes = runstate.atomic_write, []

    def atomic_write(path, write):
        writes.append(Path(path).name)
        if Path(path).name == which and writes.count(which) == 2:
            return real_write(path, lambda f: write(FullDisk(f, 1000)))
        return real_write(path, write)
    monkeypatch.setattr(runstate, "atomic_write", atomic_write)
    from resnet_spec.train.loop import Run
    real_evaluate = Run.evaluate

    def improving(self):  # one more val image right each epoch, so that epoch 2 writes best.pt as well
        totals = real_evaluate(self)
        totals[1] = len(self.history) + 1
        return totals
    monkeypatch.setattr(Run, "evaluate", improving)
    run = tmp_path / "run"
    code, out, err = cli(_train_argv(digits, run))
    assert code == 1 and "epoch 1/2:" in out and "epoch 2/2:" not in out
    no_traceback(err)
    assert err.endswith(f"\nresnet-spec train: error: {run / which}: cannot save epoch 2: the disk is full (No space"
                        f" left on device); the previous checkpoint {run / 'last.pt'} (epoch 1) was kept; make room"
                        f" and continue with `resnet-spec train --resume {run}`\n"), err[-1000:]
    assert _load(run / "last.pt")["epoch"] == 1
    assert _load(run / "best.pt")["epoch"] == (1 if which == "best.pt" else 2)
    assert sorted(p.name for p in run.iterdir()) == ["best.pt", "class_indices.json", "curves.png", "last.pt",
                                                     "metrics.csv"]
    monkeypatch.undo()
    code, _, err = cli(["train", "--resume", run])
    assert code == 0, err
    assert _load(run / "last.pt")["epoch"] == 2
    _same_weights(one_process / "last.pt", run / "last.pt")


def test_a_full_disk_on_the_first_checkpoint_keeps_no_run_folder(digits, tmp_path, cli, monkeypatch):
    import resnet_spec.train.runstate as runstate
    real_write = runstate.atomic_write
    monkeypatch.setattr(runstate, "atomic_write", lambda path, write: real_write(path, lambda f: write(FullDisk(f, 0))))
    run = tmp_path / "run"
    code, _, err = cli(_train_argv(digits, run))
    assert code == 1
    no_traceback(err)
    assert err.endswith(f"\nresnet-spec train: error: {run / 'best.pt'}: cannot save epoch 1: the disk is full"
                        " (No space left on device); no epoch has been saved\n"), err[-1000:]
    assert not run.exists()  # the run folder it made, with nothing in it worth keeping, is gone


AA = "anti_alias: avg\n"


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_predict_and_evaluate_check_the_image_size_before_loading(digits, tmp_path, cli, monkeypatch, command):
    """--image-size meets the odd-map rule as build's --input-size does: exit 1, one line, no model built."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "aa.yaml").write_text(TINY.replace("spec_version: 1\n", "spec_version: 1\n" + AA))
    code, _, err = cli(["build", "aa.yaml", "--out", "aa.pt"])
    assert code == 0, err
    code, out, build_err = cli(["build", "aa.yaml", "--input-size", "17"])
    assert code == 1 and out == ""
    image = next((digits / "val" / "3").iterdir())
    target = [image] if command == "predict" else ["--data", digits / "val"]
    built = []
    import resnet_spec.model.load as load
    monkeypatch.setattr(load, "build_with", lambda *a, **k: built.append(a))
    for source in (["aa.pt"], ["aa.pt", "--spec", "aa.yaml"]):
        code, out, err = cli([command, *source, *target, "--image-size", "17"])
        assert (code, out) == (1, "")
        assert err == build_err.replace("build", command).replace("--input-size", "--image-size"), err
    assert not built
