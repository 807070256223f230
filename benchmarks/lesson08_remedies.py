#!/usr/bin/env python3
"""Lesson 08's comparisons over several seeds: remedies for overfitting on the same budget as the overfitting run, and
retraining with one-cycle for the best epoch count. Runs whose curve nobody reads validate only
their last epoch (validation is most of the cost when the body is frozen). Each seed draws its own validation split
and training subset of `digits` (64 px, pretrained body frozen, as in the lesson). Records, per comparison, the paired
difference against its reference: mean over seeds and standard error. Writes benchmarks/results/lesson08_remedies.json.
Measures and records; asserts nothing (lesson 08 asserts on the JSON).

Usage: python benchmarks/lesson08_remedies.py [--seeds 42 43 44]"""
import argparse
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
warnings.filterwarnings('ignore', category=FutureWarning)
warnings.filterwarnings('ignore', category=UserWarning)

import pandas as pd
import torch
from fastai.callback.tracker import SaveModelCallback
from fastai.vision.augment import aug_transforms

import common
from common import write_result
from finetune_course.config import cache_dir, get_config, json_safe, set_seed
from finetune_course.data import get_dataset, make_dls
from finetune_course.diagnose import diagnose_fit
from finetune_course.models import make_learner
from finetune_course.strategies import ValidateLastEpoch

# the lesson's settings: 5 images per class, 16 epochs at a constant 1e-3, batches of 10
BUDGET = dict(n_per_class=5, epochs=16, lr=1e-3, bs=10)
AUGMENT = dict(do_flip=False, max_rotate=15, max_zoom=1.2, max_warp=0.1)
REMEDIES = {'weight decay 1.0': dict(wd=1.0), 'head dropout 0.8': dict(ps=0.8), 'augmentation': dict(augment=True)}


def trained(digits, cfg, n_per_class, train, bs=16, augment=False, every_epoch=False, **kwargs):
    "A fresh seeded learner on a digits subset trained quietly by `train`; validates every epoch only with `every_epoch`."
    set_seed(cfg.seed)
    batch_tfms = aug_transforms(**AUGMENT) if augment else None
    dls = make_dls(digits, cfg, size=64, n_per_class=n_per_class, bs=bs, batch_tfms=batch_tfms)
    learn = make_learner(dls, cfg=cfg, **kwargs)
    learn.path = cache_dir('checkpoints')/'bench_lesson08'
    with learn.no_bar(), learn.no_logging():
        if every_epoch: train(learn)
        else:
            with learn.added_cbs(ValidateLastEpoch()): train(learn)
    return learn


def row(learn, final=None):
    "Final valid loss and accuracy (or `final`), last gap (valid loss - mean training loss of the last epoch), epochs, seconds."
    ep = learn.history.epochs
    loss, acc = final if final is not None else learn.recorder.values[-1][1:3]
    return dict(valid_loss=float(loss), accuracy=float(acc), gap_last_epoch=float(loss) - float(ep.train_loss.iloc[-1]),
                epochs_run=len(ep), seconds=round(float(ep.time.sum()), 1))


def one_seed(digits, cfg):
    "Every run of the comparisons for one seed, as rows (run, group, numbers), and the valid-loss curve of the baseline."
    n, e, lr, bs = BUDGET['n_per_class'], BUDGET['epochs'], BUDGET['lr'], BUDGET['bs']
    rows = []
    base = trained(digits, cfg, n, lambda l: l.fit(e, lr, cbs=SaveModelCallback(monitor='valid_loss', fname='base_best')),
                   bs=bs, every_epoch=True)
    last = base.history.epochs
    rows.append(dict(run='baseline', group='remedies', **row(base, final=(last.valid_loss.iloc[-1], last.accuracy.iloc[-1]))))
    for name, change in REMEDIES.items():
        wd = change.get('wd')
        fit = (lambda l, wd=wd: l.fit(e, lr, wd=wd)) if wd is not None else (lambda l: l.fit(e, lr))
        learn = trained(digits, cfg, n, fit, bs=bs, **{k: v for k, v in change.items() if k != 'wd'})
        rows.append(dict(run=name, group='remedies', **row(learn)))
    with base.no_bar(): rows.append(dict(run='best checkpoint', group='remedies', **row(base, final=base.validate()[:2])))
    k = int(diagnose_fit(base).evidence['epochs_to_best'])
    again = trained(digits, cfg, n, lambda l: l.fit_one_cycle(k, lr), bs=bs)
    rows.append(dict(run='one-cycle, retrained for best length', group='retrain', retrain_epochs=k, **row(again)))
    return rows, last.valid_loss.round(5).tolist()


def paired(df, run, reference, column):
    "Mean and standard error over seeds of `run - reference` in `column`, and the number of seeds (keys as lesson 08 reads them)."
    d = common.paired(df, 'run', run, reference, column, digits=5)
    return {'run': run, 'reference': reference, 'column': column, 'mean': d['mean'], 'se': d['se'], 'n_seeds': d['n'],
            'per_seed': d['per_seed']}


COMPARISONS = ([(r, 'baseline', c) for r in (*REMEDIES, 'best checkpoint') for c in ('valid_loss', 'gap_last_epoch', 'accuracy')]
               + [('one-cycle, retrained for best length', 'baseline', 'valid_loss')])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--seeds', type=int, nargs='+', default=None, help='default: 3 seeds from the config seed')
    args = ap.parse_args(argv)
    cfg = get_config()
    seeds = args.seeds or [cfg.seed + i for i in range(3)]
    digits = get_dataset('digits', valid_pct=0.1)
    t0, rows, curves = time.perf_counter(), [], {}
    for seed in seeds:
        seed_rows, curves[str(seed)] = one_seed(digits, cfg.replace(seed=seed))
        rows += [dict(seed=seed, **r) for r in seed_rows]
        pd.DataFrame(rows).to_pickle(cache_dir('benchmarks')/'lesson08_remedies_runs.pkl') # kept should a later seed fail
        print(f'seed {seed} done after {time.perf_counter() - t0:.0f}s', flush=True)
    df = pd.DataFrame(rows)
    print(df.drop(columns=['group']).round(4).to_string(index=False))
    comparisons = [paired(df, *c) for c in COMPARISONS]
    for c in comparisons: print(f"{c['run']} - {c['reference']} ({c['column']}): {c['mean']:+.4f} +- {c['se']:.4f}")
    write_result('lesson08_remedies', json_safe(dict(
        data='digits', valid_pct=0.1, image_size=64, budget=BUDGET, augment=AUGMENT, seeds=seeds,
        torch_threads=torch.get_num_threads(), total_seconds=round(time.perf_counter() - t0, 1),
        comparisons=comparisons, runs=df.round(5).to_dict('records'), baseline_valid_loss=curves)))
    return 0


if __name__ == '__main__': sys.exit(main())
