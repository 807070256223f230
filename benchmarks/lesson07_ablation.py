#!/usr/bin/env python3
"""Lesson 07's augmentation ablation over several seeds: presets fine-tuned on the same 10 shapes per class
(no clutter, 64 px, batches of 10, 3 frozen + 20 epochs, head rate 2e-3), validated on the same 42 pictures per
class, with `augment.compare_presets`. Each seed draws its own training subset and split. Records every run and,
per preset, the paired difference against `none` in validation and training accuracy: mean over seeds and standard
error. Writes benchmarks/results/lesson07_ablation.json. Measures and records; asserts nothing (lesson 07 asserts on
the JSON).

Usage: python benchmarks/lesson07_ablation.py [--seeds 42 43 44] [--presets none light default strong albumentations]"""
import argparse
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
warnings.filterwarnings('ignore', category=FutureWarning)
warnings.filterwarnings('ignore', category=UserWarning)

import torch

import common
from common import write_result
from finetune_course.augment import AUG_PRESETS, ablation_summary, compare_presets
from finetune_course.config import cache_dir, get_config, json_safe
from finetune_course.data import get_dataset

DATA = dict(n_per_class=70, valid_pct=0.6, clutter=0.) # the lesson's shapes: 28 training and 42 validation pictures per class
PRESETS = ('none', 'default', 'strong') # the presets lesson 07's claims are about; --presets adds others
ABLATION = dict(n_per_class=10, size=64, bs=10, freeze_epochs=3, epochs=20, lr=2e-3)


def paired(results, preset, reference, column):
    "Mean and standard error over seeds of `preset - reference` in `column`, and the number of seeds (keys as lesson 07 reads them)."
    d = common.paired(results, 'preset', preset, reference, column, digits=5)
    return {'preset': preset, 'reference': reference, 'column': column, 'mean': d['mean'], 'se': d['se'], 'n_seeds': d['n'],
            'per_seed': d['per_seed']}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--seeds', type=int, nargs='+', default=None, help='one run per seed and preset; default: 3 seeds from the config seed')
    ap.add_argument('--presets', nargs='+', default=list(PRESETS), choices=AUG_PRESETS, help='default: none, default, strong')
    args = ap.parse_args(argv)
    cfg = get_config()
    seeds = args.seeds or [cfg.seed + i for i in range(3)]
    data = get_dataset('shapes', **DATA)
    t0 = time.perf_counter()
    results = compare_presets(data, args.presets, cfg=cfg, seeds=tuple(seeds), **ABLATION)
    results.to_pickle(cache_dir('benchmarks')/'lesson07_ablation_runs.pkl') # the raw runs, kept should the summary fail
    seconds = time.perf_counter() - t0
    summary = ablation_summary(results)
    print(results.round(4).to_string(index=False))
    print(summary.round(4).to_string())
    others = [p for p in args.presets if p != 'none']
    comparisons = ([paired(results, p, 'none', 'accuracy') for p in others]
                   + [paired(results, p, 'none', 'train_accuracy') for p in others]
                   + [paired(results, 'strong', p, 'train_accuracy') for p in others if p != 'strong' and 'strong' in others])
    for c in comparisons: print(f"{c['preset']} - {c['reference']} ({c['column']}): {c['mean']:+.4f} +- {c['se']:.4f}")
    write_result('lesson07_ablation', json_safe(dict(
        data='shapes', data_options=DATA, ablation=ABLATION, seeds=seeds, presets=args.presets,
        torch_threads=torch.get_num_threads(), total_seconds=round(seconds, 1),
        summary=summary.round(5).reset_index().to_dict('records'), comparisons=comparisons,
        runs=results.round(5).to_dict('records'))))
    return 0


if __name__ == '__main__': sys.exit(main())
