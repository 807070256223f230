#!/usr/bin/env python3
"""How long the built-in datasets take to build: `make_shapes` at 64 and 128 px (images per second, with masks),
and `digits` written from scikit-learn. Measures and records; asserts no time.
Writes benchmarks/results/data_generation.json."""
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result
from finetune_course.datasets import SHAPES, make_digits, make_shapes


def timed(fn):
    "Seconds `fn()` takes."
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main():
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in (64, 128):
            for n in (20, 100):
                s = timed(lambda: make_shapes(n_per_class=n, size=size, dest=Path(tmp)/f'shapes-{size}-{n}'))
                n_images = len(SHAPES)*n
                rows.append(dict(dataset='shapes', size=size, n_per_class=n, images=n_images, seconds=round(s, 3),
                                 images_per_s=round(n_images/s, 1)))
                print(rows[-1], flush=True)
        s = timed(lambda: make_digits(dest=Path(tmp)/'digits'))
        rows.append(dict(dataset='digits', size=8, images=1797, seconds=round(s, 3), images_per_s=round(1797/s, 1)))
        print(rows[-1], flush=True)
    write_result('data_generation', dict(rows=rows))


if __name__ == '__main__':
    main()
