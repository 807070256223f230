#!/usr/bin/env python3
"""What does `evaluate --tta` (plain, flip, zoom, zoom+flip averaged) change on the built-in datasets? One small fit per
dataset and seed with the CLI's path (`run_fit`: quick profile, 64 px, 20 training images per class), then
`evaluate_run` with TTA on the dataset's valid/ folder (the fit's own validation images, scored with and without TTA by
the same model). Records per run the plain and TTA accuracy and loss, and the paired difference TTA - plain over seeds.
Writes benchmarks/results/tta.json; asserts nothing.

Usage: OMP_NUM_THREADS=1 python benchmarks/tta.py [--seeds 0 1 2] [--n-per-class 20]"""
import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
warnings.filterwarnings('ignore')

import pandas as pd
import torch

from common import paired, write_result
from finetune_course.cli import run_fit
from finetune_course.data import get_dataset
from finetune_course.evaluate import TTA_VIEWS, evaluate_run

DATASETS = ('digits', 'shapes')


def one(name: str, seed: int, n_per_class: int, root: Path) -> list:
    "Plain and TTA rows for one fit."
    out = root/f'{name}-{seed}'
    run_fit(name, str(out), profile='quick', seed=seed, size=64, n_per_class=n_per_class, report=False,
            checkpoint=False, log=lambda *_: None)
    r = evaluate_run(out, get_dataset(name), tta=True, out=root/'eval', log=lambda *_: None)
    base = dict(dataset=name, seed=seed, n=r['n'])
    return [dict(base, arm='plain', accuracy=r['accuracy'], loss=r['loss']),
            dict(base, arm='tta', accuracy=r['tta']['accuracy'], loss=r['tta']['loss'])]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    ap.add_argument('--n-per-class', type=int, default=20)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    start, rows = time.time(), []
    with tempfile.TemporaryDirectory() as tmp:
        for name in DATASETS:
            for seed in a.seeds:
                rows += one(name, seed, a.n_per_class, Path(tmp))
                print(rows[-2:], flush=True)
    df = pd.DataFrame(rows)
    diff = {name: {c: paired(df[df.dataset == name], 'arm', 'tta', 'plain', c) for c in ('accuracy', 'loss')}
            for name in DATASETS}
    settings = dict(profile='quick', size=64, n_per_class=a.n_per_class, views=list(TTA_VIEWS),
                    scored_on="the dataset's valid/ folder (the fit's validation images)")
    write_result('tta', dict(settings=settings, seeds=a.seeds, runs=rows, paired_tta_minus_plain=diff,
                             seconds=round(time.time() - start, 1)))


if __name__ == '__main__':
    main()
