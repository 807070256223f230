#!/usr/bin/env python3
"""Training strategies compared on equal epoch budgets (fine_tune, feature_extract, gradual, discriminative, scratch)
for several training-set sizes: validation accuracy, loss and seconds per run, with `strategies.compare_strategies`.
Profile `full` on a GPU (224 px, 3 + 12 epochs, 3 seeds), `quick` otherwise (64 px, 3 + 8 epochs, 1 seed).
Writes benchmarks/results/strategies.json. Measures and records; asserts nothing.

Usage: python benchmarks/strategies.py [--data digits] [--sizes 10 50 all] [--strategies fine_tune scratch ...]
                                       [--profile quick|full] [--seeds 0 1] [--epochs N] [--freeze-epochs N]"""
import argparse
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
warnings.filterwarnings('ignore', category=FutureWarning)
warnings.filterwarnings('ignore', category=UserWarning)

import torch

from common import write_result
from finetune_course.config import get_config
from finetune_course.strategies import STRATEGIES, compare_strategies


def summary(df):
    "Mean accuracy per strategy and size, and the fine_tune - scratch margin per size."
    table = df.groupby(['n_per_class', 'strategy']).accuracy.mean().unstack()
    out = {str(n): {s: round(float(v), 4) for s, v in row.items()} for n, row in table.iterrows()}
    if {'fine_tune', 'scratch'} <= set(table.columns):
        for n, row in table.iterrows(): out[str(n)]['margin_fine_tune_minus_scratch'] = round(float(row['fine_tune'] - row['scratch']), 4)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--data', default='digits', help="dataset name ('digits', 'shapes') or folder")
    ap.add_argument('--sizes', nargs='+', default=['10', '50', 'all'], help="training images per class; 'all' for the whole set")
    ap.add_argument('--strategies', nargs='+', default=list(STRATEGIES), choices=STRATEGIES)
    ap.add_argument('--profile', choices=['quick', 'full'], default=None, help='default: full on a GPU, quick otherwise')
    ap.add_argument('--seeds', type=int, nargs='+', default=None, help='default: n_seeds of the profile from its seed')
    ap.add_argument('--epochs', type=int, default=None, help='epochs after unfreezing (default: profile)')
    ap.add_argument('--freeze-epochs', type=int, default=None, help='epochs of the head alone (default: profile)')
    args = ap.parse_args(argv)
    cfg = get_config(args.profile)
    sizes = [None if s == 'all' else int(s) for s in args.sizes]
    t0 = time.perf_counter()
    df = compare_strategies(args.data, args.strategies, n_per_class=sizes, seeds=args.seeds, cfg=cfg,
                            epochs=args.epochs, freeze_epochs=args.freeze_epochs)
    seconds = time.perf_counter() - t0
    print(df.round(4).to_string(index=False))
    write_result('strategies', dict(
        data=args.data, profile=cfg.profile, image_size=cfg.size, bs=cfg.bs,
        epochs=args.epochs if args.epochs is not None else cfg.epochs,
        freeze_epochs=args.freeze_epochs if args.freeze_epochs is not None else cfg.freeze_epochs,
        sizes=args.sizes, torch_threads=torch.get_num_threads(), total_seconds=round(seconds, 1), summary=summary(df), runs=df.round(5).to_dict('records')))
    return 0


if __name__ == '__main__': sys.exit(main())
