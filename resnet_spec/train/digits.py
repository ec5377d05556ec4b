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


def main(argv: list[str] | None = None) -> int:
    """`python -m resnet_spec.train.digits [ROOT]`: write the dataset; refuse a ROOT whose parent folder is missing."""
    import argparse
    import sys
    parser = argparse.ArgumentParser(prog="python -m resnet_spec.train.digits",
                                     description="Write scikit-learn's handwritten digits as an image folder "
                                                 "(ROOT/train and ROOT/val, one subfolder per digit).")
    parser.add_argument("root", nargs="?", default="digits", metavar="ROOT",
                        help="folder to write; its parent must exist (default: digits)")
    parser.add_argument("--per-class", type=int, metavar="N", help="at most N images of each digit (default: all)")
    parser.add_argument("--scale", type=int, default=1, metavar="K", help="enlarge each image K times (default: 1)")
    args = parser.parse_args(argv)
    if args.per_class is not None and args.per_class < 1:
        parser.error(f"argument --per-class: must be at least 1, got {args.per_class}")
    if not 1 <= args.scale <= 64:
        parser.error(f"argument --scale: must be from 1 to 64, got {args.scale}")
    root = Path(args.root)
    parent = root.resolve().parent
    if not parent.is_dir():
        print(f"{parser.prog}: error: {root}: folder {parent} does not exist; create it first", file=sys.stderr)
        return 1
    if root.exists() and not root.is_dir():
        print(f"{parser.prog}: error: {root}: is not a folder", file=sys.stderr)
        return 1
    print(write_digits(root, args.per_class, args.scale))
    return 0


if __name__ == "__main__":
    import sys
    sys.exit(main())
