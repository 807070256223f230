#!/usr/bin/env python3
"""The strategy comparisons of lessons 01 and 06 over several seeds, so the lessons assert them on a fixed table
instead of one-seed live fits: all five strategies on `digits` and `fine_tune` against `scratch` on `shapes`,
10 training images per class, the lessons' budget (3 + 3 epochs in the quick profile).
Each seed draws its own subset, initialization and shuffling; every strategy of one seed sees the same subset,
so differences are paired by seed. Writes benchmarks/results/lesson06_strategies.json (runs, means, and per pair
of strategies the mean paired difference with its standard error). Measures and records; asserts nothing.

With --strategies, only those are re-measured (after a change to them) and the other strategies' runs are kept from
the existing JSON when it was written with the same seeds and budget; the JSON records which were re-measured when.

Usage: python benchmarks/lesson06_strategies.py [--seeds 42 43 44 45] [--n-per-class 10] [--profile quick|full]
                                                [--epochs N] [--freeze-epochs N] [--strategies discriminative ...]"""
import argparse
import json
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
warnings.filterwarnings('ignore', category=FutureWarning)
warnings.filterwarnings('ignore', category=UserWarning)

import pandas as pd
import torch

from common import RESULTS, paired, write_result
from finetune_course.config import get_config
from finetune_course.strategies import STRATEGIES, compare_strategies

GRIDS = dict(digits=list(STRATEGIES), shapes=['fine_tune', 'scratch']) # dataset -> strategies the lessons compare


def summary(df:pd.DataFrame) -> dict:
    "Mean and standard deviation of accuracy per strategy; paired differences against scratch and against fine_tune."
    stats = df.groupby('strategy').accuracy.agg(['mean', 'std', 'min', 'max'])
    pairs = [paired(df, 'strategy', s, 'scratch', 'accuracy') for s in stats.index if s != 'scratch' and 'scratch' in stats.index]
    pairs += [paired(df, 'strategy', s, 'fine_tune', 'accuracy') for s in stats.index
              if s not in ('fine_tune', 'scratch') and 'fine_tune' in stats.index]
    return dict(accuracy={s: {k: round(float(v), 4) for k, v in row.items()} for s, row in stats.iterrows()}, pairs=pairs)


def kept_runs(budget:dict) -> dict:
    "Runs of the existing JSON per dataset (and when each strategy was measured), if it has the same budget; else a SystemExit."
    path = RESULTS/'lesson06_strategies.json'
    old = json.loads(path.read_text()) if path.exists() else {}
    if any(old.get(k) != v for k, v in budget.items()):
        raise SystemExit(f'--strategies needs {path} written with the same budget {budget}; run without --strategies')
    out = {}
    for data, res in old['results'].items():
        out[data] = res['runs']
        out[f'{data}:measured'] = {s: res.get('measured', {}).get(s, old['written'][:10]) for s in res['strategies']}
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--seeds', type=int, nargs='+', default=[42, 43, 44, 45], help='base seeds (at least 3)')
    ap.add_argument('--n-per-class', type=int, default=10, help='training images per class')
    ap.add_argument('--data', nargs='+', default=list(GRIDS), choices=list(GRIDS))
    ap.add_argument('--profile', choices=['quick', 'full'], default=None, help='default: full on a GPU, quick otherwise')
    ap.add_argument('--epochs', type=int, default=None, help='epochs after unfreezing (default: 3 in quick, else the profile)')
    ap.add_argument('--freeze-epochs', type=int, default=None, help='epochs of the head alone (default: 3 in quick, else the profile)')
    ap.add_argument('--strategies', nargs='+', default=None, choices=list(STRATEGIES),
                    help='re-measure only these; keep the other runs from the existing JSON')
    args = ap.parse_args(argv)
    cfg = get_config(args.profile)
    epochs = args.epochs if args.epochs is not None else (3 if cfg.quick else cfg.epochs)
    freeze_epochs = args.freeze_epochs if args.freeze_epochs is not None else (3 if cfg.quick else cfg.freeze_epochs)
    budget = dict(profile=cfg.profile, image_size=cfg.size, n_per_class=args.n_per_class, seeds=args.seeds,
                  epochs=epochs, freeze_epochs=freeze_epochs)
    kept = kept_runs(budget) if args.strategies else {}
    results, t0 = {}, time.perf_counter()
    for data in args.data:
        t = time.perf_counter()
        todo = [s for s in GRIDS[data] if not args.strategies or s in args.strategies]
        df = compare_strategies(data, todo, n_per_class=[args.n_per_class], seeds=args.seeds, cfg=cfg,
                                epochs=epochs, freeze_epochs=freeze_epochs) if todo else pd.DataFrame()
        old = pd.DataFrame(kept.get(data, []))
        if len(old): df = pd.concat([old[~old.strategy.isin(todo)], df], ignore_index=True)
        print(df.round(4).to_string(index=False), flush=True)
        results[data] = dict(strategies=GRIDS[data], seconds=round(time.perf_counter() - t, 1), summary=summary(df),
                             runs=df.round(5).to_dict('records'),
                             measured=kept.get(f'{data}:measured', {}) | {s: time.strftime('%Y-%m-%d') for s in todo})
    write_result('lesson06_strategies', dict(**budget, torch_threads=torch.get_num_threads(),
        total_seconds=round(time.perf_counter() - t0, 1), results=results))
    return 0


if __name__ == '__main__': sys.exit(main())
