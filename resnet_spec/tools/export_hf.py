"""Export to Hugging Face transformers' ResNet layout: a folder that `ResNetForImageClassification.from_pretrained`
loads (config.json + model.safetensors), checked by loading it back before the folder appears."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError, OutputError
from ..spec.hf import hf_config_from_spec, ours_key_to_hf
from ..spec.layout import plan
from ..spec.types import ResNetSpec

if TYPE_CHECKING:
    from torch import nn

    from .export import ExportCheck, ExportOptions


def _expressible(spec: ResNetSpec) -> None:
    """InputError naming the first field transformers' ResNet has no counterpart for."""
    problems = []
    if spec.stem.type != "conv7x7" or spec.stem.pool != "max" or not spec.stem.norm or spec.stem.bias:
        problems.append("stem (transformers has a 7x7 conv, BatchNorm, ReLU and a max pool)")
    if spec.norm.type != "batchnorm" or spec.norm.eps != 1e-5:
        problems.append("norm (BatchNorm with eps 1e-5)")
    if spec.head is None or spec.features is not None:
        problems.append("head (a classifier)")
    if spec.output_stride is not None or spec.anti_alias != "none" or spec.activation != "relu":
        problems.append("output_stride, anti_alias or activation")
    for i, st in enumerate(spec.stages):
        b = st.block
        default = 4 if b.type == "bottleneck" else 1
        if (st.overrides or st.dilation != 1 or b.groups != 1 or b.width_per_group != 64 or b.expansion != default
                or b.shortcut != "conv" or b.attention.type != "none" or b.bias or b.act_before_add):
            problems.append(f"stages[{i}] (plain basic or bottleneck blocks with a 1x1 conv projection)")
    if problems:
        raise InputError(f"{spec.name}: no transformers ResNet counterpart for: {'; '.join(problems)}")


def export_hf(model: nn.Module, spec: ResNetSpec, path: Path, opts: ExportOptions) -> ExportCheck:
    """A transformers ResNet folder; read back (with transformers when installed) and run against the model."""
    import torch
    from safetensors.torch import load_file, save_file

    from .export import DTYPE_TOLERANCE, ExportCheck, _diff, _flat, _inputs

    _expressible(spec)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise OutputError(f"{path}: already exists; give a new folder for the Hugging Face model")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"{path}: folder {parent} does not exist")
    assert spec.head is not None  # _expressible checked it
    stages = [(sp.out_channels, len(sp.blocks), spec.stages[sp.index - 1].stride) for sp in plan(spec)]
    config = hf_config_from_spec(spec.data, stages, [str(i) for i in range(spec.head.num_classes)])
    sd = {ours_key_to_hf(k): v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=parent))
    tmp.chmod(0o755)  # mkdtemp's 0700 would follow the folder through the rename
    try:
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        save_file(sd, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        x, _ = _inputs(spec, opts.size, opts.seed, next(model.parameters()).dtype)
        with torch.no_grad():
            want = _flat(model(x))
            import importlib.util
            if importlib.util.find_spec("transformers") is None:  # check the tensors and key mapping instead
                loaded = load_file(str(tmp / "model.safetensors"))
                if loaded.keys() != sd.keys() or any(not torch.equal(loaded[k], sd[k]) for k in sd):
                    raise InputError("export check failed: model.safetensors reads back different tensors")
                check = "every tensor read back and equal (transformers is not installed to run it)"
                diffs = (0.0, 0.0)
            else:
                from transformers import ResNetForImageClassification
                hf = ResNetForImageClassification.from_pretrained(str(tmp)).eval()
                diffs = _diff([hf(x).logits], want)
                check = "loaded with ResNetForImageClassification.from_pretrained and run on a batch"
        result = ExportCheck("hf", path, check, *diffs, DTYPE_TOLERANCE[opts.dtype])
        if not result.passed:
            raise InputError(f"export check failed: max rel diff {result.max_rel:.3g}; {path} not written")
        for f in tmp.iterdir():
            with f.open("rb") as fh:
                os.fsync(fh.fileno())
        if path.exists():
            path.rmdir()  # empty, checked above
        os.replace(tmp, path)
        return result
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
