#!/usr/bin/env python3
"""The BatchNorm rules compared over seeds, data sets and image sizes: fastai's default (BatchNorm in training mode
everywhere), a Keras-like rule (body BatchNorm in inference mode, its scale and shift frozen with the body), `body`
(body statistics fixed, head statistics always training) and the course's fixed-statistics rule (`make_learner`'s
default). Per run: accuracy after the head phase, final accuracy and loss, the highest validation loss after unfreezing,
seconds. Per regime (data set, size): the mean paired difference (same seed) of every rule against the fixed-statistics
rule, with its standard error. Recipe: `--freeze-epochs` of the head at 1e-2 (one cycle), `unfreeze()`, `--epochs` at
`slice(3e-6, 3e-4)`; validation stays whole. Writes
benchmarks/results/bn_rule.json. Measures and records; asserts nothing.

Usage: OMP_NUM_THREADS=1 python benchmarks/bn_rule.py [--datasets digits shapes] [--sizes 64 96] [--seeds 3]
       [--n-per-class 12] [--bs 12] [--freeze-epochs 2] [--epochs 4] [--rules fixed fastai keras body]"""
import argparse
import math
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
warnings.filterwarnings('ignore', category=FutureWarning)

import torch
from common import write_result
from finetune_course.config import get_config, set_seed
from finetune_course.data import get_dataset, make_dls
from finetune_course.models import make_learner

HEAD_LR, BODY_SLICE = 1e-2, (3e-6, 3e-4)
RULES = dict(fastai=dict(freeze_bn=False),
             keras=dict(freeze_bn=True, freeze_head_bn=False, train_bn=False),
             body=dict(freeze_bn=True, freeze_head_bn=False),
             fixed=dict(freeze_bn=True, freeze_head_bn=True))
REFERENCE = 'fixed'


def run(rule, dataset, size, seed, a):
    cfg = get_config('quick', device='cpu', size=size, seed=seed)
    set_seed(seed)
    dls = make_dls(get_dataset(dataset), cfg, n_per_class=a.n_per_class, bs=a.bs)
    t0 = time.time()
    learn = make_learner(dls, cfg=cfg, **RULES[rule])
    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(a.freeze_epochs, HEAD_LR)
        head_acc = float(learn.validate()[1])
        learn.unfreeze()
        learn.fit_one_cycle(a.epochs, slice(*BODY_SLICE))
        loss, acc = map(float, learn.validate()[:2])
        e = learn.history.epochs
        worst = float(e[e.phase == 'unfrozen'].valid_loss.max())
    return dict(rule=rule, dataset=dataset, size=size, seed=seed, head_accuracy=round(head_acc, 4),
                accuracy=round(acc, 4), valid_loss=round(loss, 4), highest_valid_loss_unfrozen=round(worst, 4),
                seconds=round(time.time() - t0, 1), n_train=len(dls.train_ds), n_valid=len(dls.valid_ds),
                steps=(a.freeze_epochs + a.epochs) * len(dls.train))


def paired(rows, rule, metric):
    "Mean and standard error of `metric` for `rule` minus the reference rule, paired by seed."
    ref = {r['seed']: r[metric] for r in rows if r['rule'] == REFERENCE}
    d = [r[metric] - ref[r['seed']] for r in rows if r['rule'] == rule and r['seed'] in ref]
    if len(d) < 2: return dict(mean=None, se=None, n=len(d))
    m = sum(d) / len(d)
    sd = math.sqrt(sum((x - m) ** 2 for x in d) / (len(d) - 1))
    return dict(mean=round(m, 4), se=round(sd / math.sqrt(len(d)), 4), n=len(d))


def summarise(rows, rules):
    out = []
    for ds, size in dict.fromkeys((r['dataset'], r['size']) for r in rows):
        rs = [r for r in rows if (r['dataset'], r['size']) == (ds, size)]
        for rule in rules:
            if rule == REFERENCE: continue
            out.append(dict(dataset=ds, size=size, rule=rule, vs=REFERENCE,
                            **{m: paired(rs, rule, m) for m in ('head_accuracy', 'accuracy', 'valid_loss',
                                                                 'highest_valid_loss_unfrozen')}))
    return out


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument('--datasets', nargs='+', default=['digits', 'shapes'])
    p.add_argument('--sizes', nargs='+', type=int, default=[64, 96])
    p.add_argument('--seeds', type=int, default=3)
    p.add_argument('--n-per-class', type=int, default=12)
    p.add_argument('--bs', type=int, default=12)
    p.add_argument('--freeze-epochs', type=int, default=2)
    p.add_argument('--epochs', type=int, default=4)
    p.add_argument('--rules', nargs='+', default=['fixed', 'fastai', 'keras'], choices=list(RULES))
    p.add_argument('--no-write', action='store_true', help='print the runs only (for timing)')
    a = p.parse_args(argv)
    rows = []
    for i, size in enumerate(a.sizes):  # the smaller size first: a run cut short still holds whole regimes
        for ds in (a.datasets if i % 2 == 0 else a.datasets[::-1]):  # the costliest regime last
            for seed in range(a.seeds):
                for rule in a.rules:
                    rows.append(run(rule, ds, size, seed, a))
                    print(rows[-1], flush=True)
                if not a.no_write: write(rows, a)  # after every seed, so a partial run keeps what it measured
    for s in summarise(rows, a.rules): print(s, flush=True)
    if not a.no_write: write(rows, a)
    return 0


def write(rows, a):
    summary = summarise(rows, a.rules)
    write_result('bn_rule', dict(rules={k: r for k, r in RULES.items() if k in a.rules},
                                     reference=REFERENCE, head_lr=HEAD_LR, body_slice=list(BODY_SLICE),
                                     n_per_class=a.n_per_class, bs=a.bs, freeze_epochs=a.freeze_epochs,
                                     epochs=a.epochs, seeds=list(range(a.seeds)), datasets=a.datasets, sizes=a.sizes,
                                     torch_threads=torch.get_num_threads(),
                                     complete=len(rows) == len(a.sizes) * len(a.datasets) * a.seeds * len(a.rules),
                                     runs=rows, paired=summary))


if __name__ == '__main__': sys.exit(main())
