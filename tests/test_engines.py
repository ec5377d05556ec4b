"""Inference engines and precisions: each engine's output against eager fp32, the CPU-feature refusals, the
output check that stops a wrong engine, and the bench command. Toy sizes: resnet18 at 32 px, batch 2."""
from __future__ import annotations

import importlib
import subprocess
import sys

import pytest
import torch

from resnet_spec import build_model
from resnet_spec.errors import InputError
from resnet_spec.model import engines, optimize
from resnet_spec.model.engines import ENGINES, Engine, OutputMismatch, accelerate

cli_main = importlib.import_module("resnet_spec.cli.main")  # the module: resnet_spec.cli.main is also its function
SIZE = 32
# Largest max |out - ref| / max |ref| against the unfolded eager fp32 model, per precision. Measured here:
# fp32 engines about 1e-6, bf16 about 1e-2, int8 (random weights, random calibration) about 3e-2.
ALLOWED = {"fp32": 1e-4, "bf16": 5e-2, "int8": 0.25}
PAIRS = [("eager", "fp32"), ("eager", "bf16"), ("onnxruntime", "fp32"), ("onnxruntime", "int8"),
         ("openvino", "fp32"), ("openvino", "bf16"), ("inductor", "fp32")]


def batch(seed: int, n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def weights() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = build_model("resnet18")
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # non-trivial BatchNorm statistics, so the fold is really tested
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
    return model.state_dict()


def fresh(weights: dict[str, torch.Tensor]) -> torch.nn.Module:
    return build_model("resnet18", init="none", weights={k: v.clone() for k, v in weights.items()})


@pytest.mark.parametrize(("engine", "precision"), PAIRS, ids=[f"{e}-{p}" for e, p in PAIRS])
def test_engine_output_matches_eager_fp32(weights, engine, precision):
    if ENGINES[engine].missing():
        pytest.skip(f"{ENGINES[engine].missing()} is not installed")
    if optimize.cpu_support(precision):
        pytest.skip(optimize.cpu_support(precision))
    reference = fresh(weights).eval()
    calibration = [batch(10 + i, 4) for i in range(3)]
    fast = accelerate(fresh(weights), precision=precision, engine=engine, calibration=calibration,
                      check_batch=batch(0))
    assert (fast.engine, fast.precision) == (engine, precision)
    assert fast.check.passed and fast.check.max_rel <= ALLOWED[precision]
    assert fast.startup_s > 0
    x = batch(5, 3)  # another batch size than the check's, and other images
    with torch.inference_mode():
        want, got = reference(x), fast(x)
    assert got.shape == want.shape == (3, 1000) and got.dtype == torch.float32
    rel = ((got - want).abs().max() / want.abs().max()).item()
    assert rel <= ALLOWED[precision], rel


def test_missing_cpu_feature_is_refused_by_name(weights, monkeypatch):
    monkeypatch.setattr(optimize, "cpu_flags", lambda: frozenset({"avx2", "avx512f"}))
    with pytest.raises(InputError, match="precision bf16 needs a CPU with AMX or AVX-512-BF16") as e:
        accelerate(fresh(weights), precision="bf16", engine="eager", check_batch=batch(0))
    assert e.value.setting == "precision"
    with pytest.raises(InputError, match="AMX or AVX-512-VNNI or AVX-VNNI"):
        accelerate(fresh(weights), precision="int8", engine="onnxruntime", calibration=[batch(1)])
    assert optimize.cpu_support("fp32") is None


def test_cpu_support_reads_the_flags():
    assert optimize.cpu_support("bf16", {"avx512_bf16"}) is None
    assert optimize.cpu_support("bf16", {"amx_bf16", "amx_tile"}) is None
    assert optimize.cpu_support("int8", {"avx_vnni"}) is None
    assert "AVX-512-BF16" in str(optimize.cpu_support("bf16", {"avx512_vnni"}))


def test_a_wrong_engine_is_stopped_by_the_output_check(weights, monkeypatch):
    def broken(model, precision, example, calib):
        return lambda x: model(x.to(memory_format=torch.channels_last)) * 1.01  # 1% off: fp32 allows 0.01%
    monkeypatch.setitem(ENGINES, "broken", Engine(broken, ("fp32",)))
    with pytest.raises(OutputMismatch, match="engine broken at fp32 differs from eager fp32") as e:
        accelerate(fresh(weights), engine="broken", check_batch=batch(0))
    assert not e.value.check.passed and e.value.check.max_rel > 1e-3
    kept = accelerate(fresh(weights), engine="broken", check_batch=batch(0), strict=False)
    assert not kept.check.passed and "FAILED" in str(kept.check)


def test_bad_choices_are_input_errors(weights):
    with pytest.raises(InputError, match="engine must be one of"):
        accelerate(fresh(weights), engine="tensorrt")
    with pytest.raises(InputError, match="engine onnxruntime does not run bf16"):
        accelerate(fresh(weights), precision="bf16", engine="onnxruntime")
    with pytest.raises(InputError, match="precision must be one of"):
        accelerate(fresh(weights), precision="fp8")
    if not optimize.cpu_support("int8"):
        with pytest.raises(InputError, match="needs calibration images"):
            accelerate(fresh(weights), precision="int8", engine="onnxruntime")


def test_optimize_for_inference_keeps_the_fp32_eager_path_and_routes_the_rest(weights):
    plain = optimize.optimize_for_inference(fresh(weights))
    assert type(plain).__name__ == "ResNet"  # the module itself, folded, as before
    fast = optimize.optimize_for_inference(fresh(weights), precision="fp32", engine="eager", check_batch=batch(0))
    assert isinstance(fast, engines.InferenceModel) and fast.check.passed


def test_bench_command_names_the_fastest_and_plots(tmp_path, monkeypatch, capsys):
    if "bench" not in cli_main.COMMANDS:
        monkeypatch.setattr(cli_main, "COMMANDS", (*cli_main.COMMANDS, "bench"))
    plot = tmp_path / "latency.png"
    rc = cli_main.main(["bench", "resnet18", "--input-size", "32", "--batch", "1,2", "--precision", "fp32,bf16",
                        "--engine", "eager,onnxruntime", "--repeats", "1", "--plot", str(plot)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "batch 1 ms" in out and "batch 2 ms" in out
    assert "onnxruntime  bf16" in out and "skipped: onnxruntime does not run bf16" in out
    assert "fastest at batch 2:" in out and "build_model('resnet18', init='none'" in out
    assert out.count("max rel diff") >= 2 and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_command_says_why_a_precision_is_skipped(monkeypatch, capsys):
    if "bench" not in cli_main.COMMANDS:
        monkeypatch.setattr(cli_main, "COMMANDS", (*cli_main.COMMANDS, "bench"))
    monkeypatch.setattr(optimize, "cpu_flags", lambda: frozenset({"avx2"}))
    rc = cli_main.main(["bench", "resnet18", "--input-size", "32", "--batch", "1", "--precision", "bf16",
                        "--engine", "eager", "--repeats", "1"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "skipped: precision bf16 needs a CPU with AMX or AVX-512-BF16" in out
    assert "batch 1: no engine passed the output check" in out


def test_int8_calibrates_on_an_image_folder(weights, tmp_path):
    if ENGINES["onnxruntime"].missing() or optimize.cpu_support("int8"):
        pytest.skip("needs onnxruntime and a CPU with VNNI")
    from PIL import Image

    from resnet_spec.cli.bench import calibration_batches
    g = torch.Generator().manual_seed(4)
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(5):
            pixels = torch.randint(0, 256, (40, 40, 3), generator=g, dtype=torch.uint8).numpy()
            Image.fromarray(pixels).save(tmp_path / cls / f"{i}.png")
    batches = calibration_batches(tmp_path, SIZE, images=8, batch=4)
    assert [tuple(b.shape) for b in batches] == [(4, 3, SIZE, SIZE)] * 2
    assert abs(batches[0].mean().item()) < 1.5  # normalized with the ImageNet statistics, not 0..255
    # A spec with its own mean and std (timm's ResNetV2: 0.5) is calibrated on inputs normalized as it is fed.
    from resnet_spec.api import load_spec
    half = calibration_batches(tmp_path, SIZE, images=8, batch=4, spec=load_spec("resnetv2_50"))
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    pixels = batches[0] * std + mean  # back to 0..1
    assert torch.allclose(half[0], (pixels - 0.5) / 0.5, atol=1e-5)
    fast = accelerate(fresh(weights), precision="int8", engine="onnxruntime", calibration=batches,
                      check_batch=batches[0])
    assert fast.check.passed and fast.check.top1_agreement >= 0.5


def test_build_model_and_the_build_command_take_a_precision(weights, cli):
    if optimize.cpu_support("bf16"):
        pytest.skip(optimize.cpu_support("bf16"))
    model = build_model("resnet18", init="none", weights={k: v.clone() for k, v in weights.items()},
                        optimize="inference", precision="bf16", engine="eager")
    assert model.check.passed and model.precision == "bf16"
    with pytest.raises(ValueError, match="need optimize='inference'"):
        build_model("resnet18", precision="bf16")
    code, out, err = cli(["build", "resnet18", "--optimize", "--precision", "bf16", "--engine", "eager",
                          "--input-size", "32"])
    assert code == 0 and "optimized for inference: eager bf16" in out and "top-1 agreement" in out, err
    code, _, err = cli(["build", "resnet18", "--precision", "int8", "--optimize"])
    assert code == 2 and "--calibration" in err


def test_bench_command_line_plots_a_tiny_spec(tiny):
    """`resnet-spec bench SPEC --plot FILE.png` as a user types it, in a fresh process, on a tiny spec file."""
    proc = subprocess.run([sys.executable, "-m", "resnet_spec", "bench", "tiny.yaml", "--batch", "1,4",
                           "--precision", "fp32", "--engine", "eager", "--repeats", "1", "--plot", "latency.png"],
                          cwd=tiny, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "fastest at batch 4: eager fp32" in proc.stdout and "wrote latency.png" in proc.stdout
    png = (tiny / "latency.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
