"""scikit-learn's bundled handwritten digits as an ImageFolder (train/ and val/), for tests and benchmarks."""
from __future__ import annotations

from pathlib import Path

# Every VAL_EVERY-th image of each class goes to val/: a fixed, stratified split with no RNG involved,
# so the test suite and the benchmark always see the same 1,437 / 360 images.
VAL_EVERY = 5


def write_digits(root: str | Path, per_class: int | None = None, scale: int = 1) -> Path:
    """Write sklearn's 1,797 8x8 digits as root/{train,val}/<digit>/<index>.png and return root.

    per_class caps the images taken from each class (for quick tests); scale enlarges each image by
    nearest-neighbour so a loader that resizes sees real pixels rather than 8x8 blurs.
    """
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    root = Path(root)
    digits = load_digits()
    taken = {c: 0 for c in range(10)}
    for index, (pixels, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        label = int(label)
        if per_class is not None and taken[label] >= per_class:
            continue
        split = "val" if taken[label] % VAL_EVERY == 0 else "train"
        taken[label] += 1
        folder = root / split / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        # Pixel values are 0..16 (ink intensity); map them to 0..255 as a grey RGB image.
        grey = np.clip(pixels * (255.0 / 16.0), 0, 255).astype(np.uint8)
        if scale > 1:
            grey = np.kron(grey, np.ones((scale, scale), dtype=np.uint8))
        Image.fromarray(grey).convert("RGB").save(folder / f"{index:04d}.png")  # a 2-D uint8 array is mode L
    return root


if __name__ == "__main__":
    import sys
    print(write_digits(sys.argv[1] if len(sys.argv) > 1 else "digits"))
