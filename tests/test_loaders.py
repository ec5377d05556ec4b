"""The in-memory data path: batch-wise RandomResizedCrop against torchvision's, the batches it yields, and when
`--cache` chooses it."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import RandomResizedCrop

from resnet_spec.errors import InputError
from resnet_spec.train import data, loaders
from resnet_spec.train.distributed import Dist
from resnet_spec.train.loop import TrainConfig

SCALE = (0.08, 1.0)


@pytest.mark.parametrize("height, width", [(20, 8), (8, 20), (32, 32)])
def test_boxes_fall_back_to_torchvisions_centre_crop(height, width):
    # A full-area crop of ratio 3/4..4/3 fits none of these (tall, wide, square): every try fails and
    # torchvision takes the centre crop clamped to the ratio range.
    top, left, h, w = RandomResizedCrop.get_params(torch.zeros(1, height, width), scale=[1.0, 1.0],
                                                   ratio=list(loaders.RATIO))
    boxes = loaders.BatchRandomResizedCrop(16, (1.0, 1.0), hflip=False).boxes(5, height, width)
    assert boxes.tolist() == [[left, top, left + w, top + h]] * 5


def _get_params_loop(n: int, height: int, width: int, scale: tuple[float, float]) -> torch.Tensor:
    """torchvision's RandomResizedCrop.get_params, line for line, one box at a time, fed the draws boxes() makes."""
    area, log_ratio = height * width, (math.log(loaders.RATIO[0]), math.log(loaders.RATIO[1]))
    targets = area * torch.empty(n, 10, dtype=torch.float64).uniform_(*scale)
    aspects = torch.exp(torch.empty(n, 10, dtype=torch.float64).uniform_(*log_ratio))
    offsets = torch.rand(n, 2, dtype=torch.float64)
    out = []
    for k in range(n):
        for t in range(10):
            w = int(round(math.sqrt(targets[k, t] * aspects[k, t])))
            h = int(round(math.sqrt(targets[k, t] / aspects[k, t])))
            if 0 < w <= width and 0 < h <= height:
                # torch.randint(0, height - h + 1) and (0, width - w + 1): uniform over every position
                top, left = int(offsets[k, 0] * (height - h + 1)), int(offsets[k, 1] * (width - w + 1))
                break
        else:
            in_ratio = width / height
            if in_ratio < min(loaders.RATIO):
                w, h = width, int(round(width / min(loaders.RATIO)))
            elif in_ratio > max(loaders.RATIO):
                h, w = height, int(round(height * max(loaders.RATIO)))
            else:
                w, h = width, height
            top, left = (height - h) // 2, (width - w) // 2
        out.append([left, top, left + w, top + h])
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("height, width, scale", [(48, 64, SCALE), (20, 8, (0.9, 1.0)), (8, 20, (0.9, 1.0)),
                                                  (3, 50, (0.5, 1.0)), (2, 3, SCALE), (32, 32, (1.0, 1.0))])
def test_boxes_equal_get_params_given_the_same_draws(height, width, scale):
    torch.manual_seed(0)
    boxes = loaders.BatchRandomResizedCrop(4, scale, hflip=False).boxes(300, height, width)
    torch.manual_seed(0)
    assert torch.equal(boxes, _get_params_loop(300, height, width, scale))


def test_boxes_are_drawn_as_torchvision_draws_them():
    height, width, n = 48, 64, 4000
    torch.manual_seed(0)
    boxes = loaders.BatchRandomResizedCrop(16, SCALE, hflip=False).boxes(n, height, width)
    x1, y1, x2, y2 = boxes.unbind(1)
    w, h = x2 - x1, y2 - y1
    assert torch.equal(boxes, boxes.round()) and (x1 >= 0).all() and (y1 >= 0).all()
    assert (x2 <= width).all() and (y2 <= height).all() and (w >= 1).all() and (h >= 1).all()
    ours = torch.stack([w * h / (height * width), w / h, x1 / width, y1 / height], 1)
    torch.manual_seed(1)
    draws = (RandomResizedCrop.get_params(torch.zeros(1, height, width), list(SCALE), list(loaders.RATIO))
             for _ in range(n))
    theirs = torch.tensor([[ww * hh / (height * width), ww / hh, j / width, i / height] for i, j, hh, ww in draws],
                          dtype=torch.float64)
    # Same distribution, different draws: means and spreads agree to within sampling error (n = 4000).
    assert torch.allclose(ours.mean(0), theirs.mean(0), atol=0.02), (ours.mean(0), theirs.mean(0))
    assert torch.allclose(ours.std(0), theirs.std(0), atol=0.02), (ours.std(0), theirs.std(0))
    assert ours[:, 0].min() >= SCALE[0] * 0.9 and ours[:, 1].min() >= 0.7 and ours[:, 1].max() <= 1.45


def test_whole_image_box_resamples_as_interpolate_and_area_pooling():
    crop = loaders.BatchRandomResizedCrop(16, (1.0, 1.0), hflip=False)
    small = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    # Square images with scale 1: the box is the whole image, so the crop is a plain resize.
    up = F.interpolate(small.float(), size=(16, 16), mode="bilinear", align_corners=False)
    torch.testing.assert_close(crop(small), up, rtol=0, atol=1e-4)  # float32 rounding only
    big = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    torch.testing.assert_close(crop(big), F.avg_pool2d(big.float(), 2), rtol=0, atol=1e-4)
    # Three times smaller: roi_align takes ceil(24 / 8) = 3 samples a side, on the pixel centres: a 3x3 average.
    third = torch.randint(0, 256, (4, 3, 24, 24), dtype=torch.uint8)
    smaller = loaders.BatchRandomResizedCrop(8, (1.0, 1.0), hflip=False)
    torch.testing.assert_close(smaller(third), F.avg_pool2d(third.float(), 3), rtol=0, atol=1e-4)


def test_a_box_inside_the_image_is_that_crop_resampled(monkeypatch):
    images = torch.randint(0, 256, (2, 3, 16, 20), dtype=torch.uint8)
    crop = loaders.BatchRandomResizedCrop(4, SCALE, hflip=False)
    monkeypatch.setattr(crop, "boxes", lambda n, h, w: torch.tensor([[4.0, 2.0, 12.0, 10.0], [10.0, 6.0, 18.0, 14.0]]))
    out = crop(images)
    # 8x8 boxes to 4x4: two samples a side per output pixel, at the pixel centres: 2x2 average pooling of the crop.
    expected = torch.stack([F.avg_pool2d(images[0, :, 2:10, 4:12].float(), 2),
                            F.avg_pool2d(images[1, :, 6:14, 10:18].float(), 2)])
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-4)


def test_flip_mirrors_some_images_and_leaves_the_rest():
    images = torch.randint(0, 256, (64, 3, 12, 12), dtype=torch.uint8)
    torch.manual_seed(5)
    plain = loaders.BatchRandomResizedCrop(8, SCALE, hflip=False)(images)
    torch.manual_seed(5)
    flipped = loaders.BatchRandomResizedCrop(8, SCALE, hflip=True)(images)  # same boxes: they are drawn first
    mirrored = [not torch.equal(a, b) for a, b in zip(plain, flipped, strict=True)]
    for a, b, m in zip(plain, flipped, mirrored, strict=True):
        assert torch.equal(b, a.flip(2) if m else a)
    assert 16 < sum(mirrored) < 48


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_crop_on_cuda_matches_cpu():
    images = torch.randint(0, 256, (32, 3, 20, 24), dtype=torch.uint8)
    crop = loaders.BatchRandomResizedCrop(16, SCALE, hflip=True)
    torch.manual_seed(7)
    on_cpu = crop(images)
    torch.manual_seed(7)  # the boxes and flips are drawn on the CPU either way: the same ones
    on_cuda = crop(images.cuda())
    assert on_cuda.device.type == "cuda"
    torch.testing.assert_close(on_cuda.cpu(), on_cpu, rtol=0, atol=1e-3)  # float32 bilinear, summed in another order


def test_memory_batches_follow_the_sampler_and_report_skips_once():
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 3, 2, 2).contiguous()
    targets = torch.arange(10)
    batches = loaders.MemoryBatches(images, targets, 4, sampler=[9, 0, 3, 5, 1, 2, 8], skipped=("bad.png: broken",))
    out = list(batches)
    assert len(batches) == len(out) == 2
    assert [t.tolist() for _, t, _ in out] == [[9, 0, 3, 5], [1, 2, 8]]
    assert all(torch.equal(x[:, 0, 0, 0], t.to(torch.uint8)) for x, t, _ in out)
    assert [s for _, _, s in out] == [["bad.png: broken"], []]
    # A rank whose val images all failed still reports them, with an empty batch.
    empty = loaders.MemoryBatches(images[:0], targets[:0], 4, skipped=("a.png: broken", "b.png: broken"))
    [(x, t, skipped)] = list(empty)
    assert len(x) == len(t) == 0 and skipped == ["a.png: broken", "b.png: broken"]


def _folder(root, sizes: dict[str, list[tuple[int, int]]]) -> data.Split:
    for name, shapes in sizes.items():
        (root / name).mkdir(parents=True)
        for k, (w, h) in enumerate(shapes):
            Image.new("RGB", (w, h), (k * 40, 0, 0)).save(root / name / f"{k}.png")
    return data.scan_split(root, "train/")


def _make(tmp_path, train_sizes, cache: str) -> loaders.Loaders:
    train = _folder(tmp_path / "train", train_sizes)
    val = _folder(tmp_path / "val", {"a": [(9, 9)], "b": [(5, 7)]})
    cfg = TrainConfig(spec="s", data=str(tmp_path), out="o", image_size=4, batch_size=2, workers=0, cache=cache)
    return loaders.make(cfg, train, val, Dist(0, 1, 0), torch.device("cpu"))


def test_cache_auto_holds_equal_sized_images_in_memory(tmp_path):
    made = _make(tmp_path, {"a": [(6, 6)] * 3, "b": [(6, 6)] * 2}, "auto")
    assert isinstance(made.train, loaders.MemoryBatches) and made.train.images.shape == (5, 3, 6, 6)
    assert made.val.images.shape == (2, 3, 4, 4)  # val holds the transformed images, whatever their size was
    assert "decoded once into cpu memory" in made.note
    batch, targets, _ = next(iter(made.train))
    assert batch.shape == (2, 3, 4, 4) and batch.dtype == torch.float32


def test_cache_auto_reads_mixed_sizes_from_disk_and_on_refuses(tmp_path):
    sizes = {"a": [(6, 6), (6, 6)], "b": [(6, 6), (7, 6)]}
    made = _make(tmp_path / "auto", sizes, "auto")
    assert isinstance(made.train, torch.utils.data.DataLoader)
    assert "read from disk" in made.note and "images differ in size (6x6 and 7x6" in made.note
    with pytest.raises(InputError, match="cache on: cannot hold .* in memory: images differ in size"):
        _make(tmp_path / "on", sizes, "on")


def test_cache_auto_stays_within_its_budget(tmp_path, monkeypatch):
    monkeypatch.setattr(loaders, "AUTO_BUDGET", 3 * 6 * 6 * 4)  # room for four of the five images
    made = _make(tmp_path / "auto", {"a": [(6, 6)] * 3, "b": [(6, 6)] * 2}, "auto")
    assert "exceed" in made.note and isinstance(made.train, torch.utils.data.DataLoader)
    made = _make(tmp_path / "on", {"a": [(6, 6)] * 3, "b": [(6, 6)] * 2}, "on")  # on has no budget
    assert isinstance(made.train, loaders.MemoryBatches) and made.cache == "on"
    # The train images (540 bytes) fit, but not with the val set transformed (2 images of 3x4x4).
    monkeypatch.setattr(loaders, "AUTO_BUDGET", 600)
    made = _make(tmp_path / "with_val", {"a": [(6, 6)] * 3, "b": [(6, 6)] * 2}, "auto")
    assert "the decoded train and val images exceed" in made.note and made.cache == "off"


def test_cache_on_refuses_more_than_the_free_memory(tmp_path, monkeypatch):
    monkeypatch.setattr(loaders, "_free_bytes", lambda device: 100)
    with pytest.raises(InputError, match=r"cache on: .* more than the 0.00 GiB of cpu memory free"):
        _make(tmp_path, {"a": [(6, 6)] * 3, "b": [(6, 6)] * 2}, "on")


def test_no_readable_train_image_is_an_error(tmp_path):
    train = _folder(tmp_path / "train", {"a": [(6, 6)], "b": [(6, 6)]})
    for path, _ in train.samples:
        Path(path).write_bytes(b"not an image")
    val = _folder(tmp_path / "val", {"a": [(6, 6)], "b": [(6, 6)]})
    cfg = TrainConfig(spec="s", data=str(tmp_path), out="o", image_size=4, batch_size=2, workers=0)
    with pytest.raises(InputError, match="none of the 2 train images could be read"):
        loaders.make(cfg, train, val, Dist(0, 1, 0), torch.device("cpu"))


def test_normalize_leaves_a_float_batch_as_it_was():
    # The crop hands normalize float batches; one kept and fed again (the benchmark does) must not change.
    batch = torch.rand(2, 3, 4, 4) * 255
    kept = batch.clone()
    first = data.normalize(batch, torch.device("cpu"))
    assert torch.equal(batch, kept) and torch.equal(data.normalize(batch, torch.device("cpu")), first)
