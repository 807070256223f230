#!/usr/bin/env python3
"""The default fine-tuning recipe on `digits` with BatchNorm in inference mode nowhere, in the body only, or in the body
and (once the body trains) the head, with the stage-wise parameter groups of `make_learner` and with fastai's two groups
(body, head): accuracy after the head phase, accuracy and loss at the end, the highest validation loss after unfreezing,
and seconds. Recipe: `freeze_epochs` epochs of the head at 1e-2 (one cycle), then `unfreeze()` and `epochs` epochs at
the given slice. Writes benchmarks/results/models_bn_recipe.json. Measures and records; asserts nothing.

Usage: python benchmarks/models_bn_recipe.py [--n-per-class N] [--epochs 8] [--runs stage:3e-6:3e-4:all two:3e-6:3e-4:all ...]
A run is `groups:lo:hi:bn` with groups `stage` (make_learner's default splitter) or `two` (body, head), and bn `none`
(fastai's default), `body` (`freeze_bn=True, freeze_head_bn=False`) or `all` (make_learner's default)."""
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

DEFAULT_RUNS = ['stage:3e-6:3e-4:all', 'stage:3e-6:3e-4:body', 'stage:3e-6:3e-4:none', 'two:3e-6:3e-4:all', 'stage:3e-5:3e-3:all']
BN = dict(none=dict(freeze_bn=False), body=dict(freeze_bn=True, freeze_head_bn=False), all=dict(freeze_bn=True, freeze_head_bn=True))


def two_groups(model): return L(model[0], model[1:]).map(params)


def run(spec, cfg, n_per_class, epochs):
    groups, lo, hi, bn = spec.split(':')
    set_seed(cfg.seed)
    dls = make_dls(get_dataset('digits'), cfg, n_per_class=n_per_class)
    t0 = time.time()
    learn = make_learner(dls, cfg=cfg, **BN[bn], **(dict(splitter=two_groups) if groups == 'two' else {}))
    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(cfg.freeze_epochs, 1e-2)
        head_acc = float(learn.validate()[1])
        learn.unfreeze()
        learn.fit_one_cycle(epochs, slice(float(lo), float(hi)))
        loss, acc = map(float, learn.validate()[:2])
        epochs = learn.history.epochs
        worst = float(epochs[epochs.phase == 'unfrozen'].valid_loss.max())
    return dict(run=spec, groups=len(learn.opt.param_groups), lr=[float(lo), float(hi)], bn=bn,
                head_accuracy=round(head_acc, 4), accuracy=round(acc, 4), valid_loss=round(loss, 4),
                highest_valid_loss_unfrozen=round(worst, 4), seconds=round(time.time() - t0, 1),
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
        rows.append(run(spec, cfg, a.n_per_class, epochs))
        print(rows[-1], flush=True)
    write_result('models_bn_recipe', dict(size=cfg.size, freeze_epochs=cfg.freeze_epochs, epochs=epochs,
                                          n_per_class=a.n_per_class, runs=rows))
    return 0


if __name__ == '__main__': sys.exit(main())
