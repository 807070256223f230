#!/usr/bin/env python3
"""Which weights should `finetune-course fit` keep by default: the epoch with the lowest validation loss (`--keep best`)
or the last epoch's (`--keep last`)? One fit per dataset and seed, with the CLI's training path (`fit_interruptible`,
the quick profile's 3 frozen + 8 unfrozen epochs, 64 px, tiny subsets); the callback holds both sets of weights, and
each is scored on a test set that neither trained nor chose the epoch: the dataset's own valid/ folder, while the fit's
validation images are carved out of train/. Records per run the test accuracy and loss of both, the best epoch, and
the paired difference best - last over seeds. Writes benchmarks/results/keep_best.json; asserts nothing.

Usage: OMP_NUM_THREADS=1 python benchmarks/keep_best.py [--seeds 0 1 2] [--n-train 10] [--n-valid 10]"""
import argparse
import os
import random
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
warnings.filterwarnings('ignore')

import pandas as pd
import torch

import common
from common import write_result
from finetune_course.cli import fit_interruptible, fit_learner
from finetune_course.config import get_config, set_seed
from finetune_course.data import IMAGE_EXTS, LabelledImage, get_dataset, make_dls

DATASETS = ('digits', 'shapes')


def _images(folder: Path) -> dict:
    "{class: sorted image files} of a folder-per-class tree."
    return {d.name: sorted(f for f in d.iterdir() if f.suffix.lower() in IMAGE_EXTS)
            for d in sorted(folder.iterdir()) if d.is_dir() and not d.name.startswith(('.', '_'))}


def split_folder(root: Path, seed: int, n_train: int, n_valid: int, into: Path) -> list:
    "Link `n_train` + `n_valid` images per class of root/train into `into`/train and /valid; the test items: root/valid."
    rng = random.Random(seed)
    for c, files in _images(root/'train').items():
        files = rng.sample(files, n_train + n_valid)
        for split, part in (('train', files[:n_train]), ('valid', files[n_train:])):
            (into/split/c).mkdir(parents=True, exist_ok=True)
            for f in part: (into/split/c/f.name).symlink_to(f)
    return [LabelledImage(f, c) for c, files in _images(root/'valid').items() for f in files]


def test_scores(learn, state: dict, items: list) -> tuple:
    "(accuracy, loss) of `learn.model` with weights `state` on the labelled `items`."
    learn.model.load_state_dict(state)
    dl = learn.dls.test_dl(items, with_labels=True)
    preds, targs, losses = learn.get_preds(dl=dl, with_loss=True)
    return float((preds.argmax(1) == targs).float().mean()), float(losses.mean())


def one_run(name: str, seed: int, n_train: int, n_valid: int) -> dict:
    "Fit once on a seeded subset; test the best and the last epoch's weights."
    cfg = get_config('quick', seed=seed)
    set_seed(seed)
    with tempfile.TemporaryDirectory() as tmp:
        test = split_folder(Path(get_dataset(name)), seed, n_train, n_valid, Path(tmp))
        dls = make_dls(tmp, cfg, bs=16)
        learn = fit_learner(dls, 'tf_efficientnet_lite0', True, cfg, progress=False, log=lambda *a: None)
        t0 = time.time()
        with learn.no_logging():
            result, _ = fit_interruptible(learn, 'fine_tune', cfg, log=lambda *a: None, keep='last')
        cb, seconds = learn.last_epoch, time.time() - t0
        best_acc, best_loss = test_scores(learn, cb.best_state, test)
        last_acc, last_loss = test_scores(learn, cb.state, test)
    return dict(dataset=name, seed=seed, n_train=len(dls.train_ds), n_valid=len(dls.valid_ds), n_test=len(test),
                epochs=cb.done, best_epoch=cb.best['epoch'], valid_loss_best=cb.best['valid_loss'],
                valid_acc_best=cb.best['accuracy'], valid_loss_last=result.valid_loss, valid_acc_last=result.accuracy,
                test_acc_best=best_acc, test_acc_last=last_acc, test_loss_best=best_loss, test_loss_last=last_loss,
                fit_seconds=round(seconds, 1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    ap.add_argument('--n-train', type=int, default=10)
    ap.add_argument('--n-valid', type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS', '1')))
    t0, rows = time.time(), []
    for name in DATASETS:
        for seed in args.seeds:
            rows.append(one_run(name, seed, args.n_train, args.n_valid))
            print({k: rows[-1][k] for k in ('dataset', 'seed', 'best_epoch', 'test_acc_best', 'test_acc_last', 'fit_seconds')})
    df = pd.DataFrame(rows)
    long = pd.concat([df.assign(arm=arm, test_acc=df[f'test_acc_{arm}'], test_loss=df[f'test_loss_{arm}'])
                      for arm in ('best', 'last')])
    paired = {name: {col: common.paired(long[long.dataset == name], 'arm', 'best', 'last', col)
                     for col in ('test_acc', 'test_loss')} for name in DATASETS}
    overall = {col: common.paired(long.assign(unit=long.dataset + long.seed.astype(str)), 'arm', 'best', 'last', col,
                                  index='unit') for col in ('test_acc', 'test_loss')}
    write_result('keep_best', dict(settings=dict(profile='quick', size=64, bs=16, backbone='tf_efficientnet_lite0',
                                                 strategy='fine_tune', n_train_per_class=args.n_train,
                                                 n_valid_per_class=args.n_valid, seeds=args.seeds,
                                                 test='the dataset valid/ folder (never trained on or used to choose)'),
                                   runs=rows, paired_best_minus_last=paired, overall_best_minus_last=overall,
                                   seconds=round(time.time() - t0, 1)))


if __name__ == '__main__':
    main()
