#!/usr/bin/env python3
"""The default fine-tuning recipe on `digits` with and without `freeze_bn`, with the stage-wise parameter groups of
`make_learner` and with fastai's two groups (body, head): accuracy after the head phase and at the end, and seconds.
Recipe: `freeze_epochs` epochs of the head at 1e-2 (one cycle), then `unfreeze()` and `epochs` epochs at the given
slice. Writes benchmarks/results/models_bn_recipe.json. Measures and records; asserts nothing.

Usage: python benchmarks/models_bn_recipe.py [--n-per-class N] [--epochs 8] [--runs stage:3e-5:3e-3:1 two:3e-5:3e-3:1 ...]
A run is `groups:lo:hi:freeze_bn` with groups `stage` (make_learner's default splitter) or `two` (body, head)."""
import argparse
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
warnings.filterwarnings('ignore', category=FutureWarning)

from common import write_result
from fastai.torch_core import params
from fastcore.foundation import L
from finetune_course.config import get_config, set_seed
from finetune_course.data import get_dataset, make_dls
from finetune_course.models import make_learner

DEFAULT_RUNS = ['stage:3e-5:3e-3:1', 'stage:3e-5:3e-3:0', 'two:3e-5:3e-3:1', 'stage:1e-5:3e-4:1']


def two_groups(model): return L(model[0], model[1:]).map(params)


def run(spec, cfg, n_per_class, epochs):
    groups, lo, hi, freeze_bn = spec.split(':')
    set_seed(cfg.seed)
    dls = make_dls(get_dataset('digits'), cfg, n_per_class=n_per_class)
    t0 = time.time()
    learn = make_learner(dls, cfg=cfg, freeze_bn=freeze_bn == '1', **(dict(splitter=two_groups) if groups == 'two' else {}))
    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(cfg.freeze_epochs, 1e-2)
        head_acc = float(learn.validate()[1])
        learn.unfreeze()
        learn.fit_one_cycle(epochs, slice(float(lo), float(hi)))
        acc = float(learn.validate()[1])
    return dict(run=spec, groups=len(learn.opt.param_groups), lr=[float(lo), float(hi)], freeze_bn=freeze_bn == '1',
                head_accuracy=round(head_acc, 4), accuracy=round(acc, 4), seconds=round(time.time() - t0, 1),
                n_train=len(dls.train_ds), n_valid=len(dls.valid_ds))


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument('--n-per-class', type=int, default=None)
    p.add_argument('--epochs', type=int, default=None, help='epochs after unfreezing (default: the quick profile, 8)')
    p.add_argument('--runs', nargs='+', default=DEFAULT_RUNS)
    a = p.parse_args(argv)
    cfg = get_config('quick')
    epochs = a.epochs or cfg.epochs
    rows = []
    for spec in a.runs:
        rows.append(run(spec, cfg, a.n_per_class, epochs)); print(rows[-1], flush=True)
    write_result('models_bn_recipe', dict(size=cfg.size, freeze_epochs=cfg.freeze_epochs, epochs=epochs,
                                          n_per_class=a.n_per_class, runs=rows))
    return 0


if __name__ == '__main__': sys.exit(main())
