"The freeze, lr_find and strategies modules: parameter groups, freezing, discriminative rates, the learning-rate finder, the strategies."
import math
import warnings

import numpy as np
import pytest
import torch
from fastai.callback.core import Callback
from fastai.callback.progress import ProgressCallback
from fastcore.basics import even_mults

from finetune_course.config import get_config, set_seed
from finetune_course.data import get_dataset, make_dls
from finetune_course.monitor import DivergedError
from finetune_course.freeze import (changes_by_group, fit_gradual, gradual_schedule, group_lrs, param_groups_report,
                                    recipe_lrs, snapshot)
from finetune_course.lr_find import find_lr
from finetune_course.models import make_learner, trains_by_group
from finetune_course.strategies import (SCRATCH_LR, STRATEGIES, FitResult, PeakLRs, ValidateLastEpoch, compare_strategies,
                                        final_metrics, fit_strategy, small_data_bs, strategy_plan)

warnings.filterwarnings('ignore', category=UserWarning)


@pytest.fixture(scope='module')
def cfg(): return get_config('quick', 'cpu', size=32, bs=8)


@pytest.fixture(scope='module')
def tiny(cfg):
    "5 shape classes, 6 training and 2 validation images each, 32 px."
    return get_dataset('shapes', n_per_class=8, size=32)


@pytest.fixture()
def dls(tiny, cfg): return make_dls(tiny, cfg)


def learner(dls, cfg, **kw):
    set_seed(0)
    learn = make_learner(dls, cfg=cfg, **kw)
    learn.remove_cb(ProgressCallback)
    return learn


def test_report_groups(dls, cfg):
    learn = learner(dls, cfg)
    rep = param_groups_report(learn)
    n = len(learn.opt.param_lists)
    assert n >= 4 and len(rep) == n
    assert rep.params.sum() == sum(p.numel() for p in learn.model.parameters())
    assert rep.trainable.sum() == sum(p.numel() for p in learn.model.parameters() if p.requires_grad)
    assert rep.name.iloc[0] == 'stem' and rep.name.iloc[-1] == 'head'
    assert rep.state.iloc[-1] == 'trainable' and set(rep.state.iloc[:-1]) == {'partly'} # train_bn=True
    assert group_lrs(learn) == list(rep.lr)
    frozen = param_groups_report(learner(dls, cfg, train_bn=False))
    assert set(frozen.state.iloc[:-1]) == {'frozen'}


def test_freeze_to_minus_two(dls, cfg):
    learn = learner(dls, cfg)
    n = len(learn.opt.param_lists)
    learn.freeze_to(-2)
    assert trains_by_group(learn) == [False]*(n-2) + [True, True]
    learn.unfreeze()
    assert trains_by_group(learn) == [True]*n


def test_even_mults_rates(dls, cfg):
    learn = learner(dls, cfg)
    n = len(learn.opt.param_lists)
    learn.unfreeze()
    learn.fit(1, slice(1e-5, 1e-3))
    np.testing.assert_allclose(group_lrs(learn), even_mults(1e-5, 1e-3, n), rtol=1e-9)
    rec = PeakLRs()
    learn.fit_one_cycle(1, slice(1e-5, 1e-3), cbs=rec)
    np.testing.assert_allclose(rec.fits[0]['peak'], even_mults(1e-5, 1e-3, n), rtol=1e-9)
    used = np.array(rec.batches)
    np.testing.assert_allclose(used/used[:, -1:], np.tile(np.array(even_mults(1e-5, 1e-3, n))/1e-3, (len(used), 1)), rtol=1e-9)


def test_frozen_weights_bit_identical(dls, cfg):
    learn = learner(dls, cfg, train_bn=False) # BN in inference mode (default freeze_bn) and BN affine frozen
    before = snapshot(learn.model)
    learn.fit_one_cycle(1, 1e-2)
    ch = changes_by_group(learn, before)
    head = len(learn.opt.param_lists) - 1
    assert ch.drop(index=head)[['weights_changed', 'bn_stats_changed']].sum().sum() == 0
    assert ch.loc[head, 'weights_changed'] > 0
    body = learn.model[0].state_dict()
    assert all(torch.equal(v, before[f'0.{k}']) for k, v in body.items())


def test_fastai_default_moves_bn(dls, cfg):
    learn = learner(dls, cfg, freeze_bn=False)
    before = snapshot(learn.model)
    learn.fit(1, 1e-2)
    ch = changes_by_group(learn, before).iloc[:-1]
    assert (ch.bn_stats_changed == ch.bn_stats).all()
    assert (ch.weights_changed > 0).all() and (ch.weights_changed < ch.weights).all() # BN affine yes, convolutions no


def test_pure_helpers():
    assert gradual_schedule(7, 11) == [(1, 1), (2, 1), (3, 1), (4, 2), (5, 2), (6, 2), (7, 2)]
    assert gradual_schedule(7, 1) == [(7, 1)]
    with pytest.raises(ValueError, match='n_phases'): gradual_schedule(7, 3, n_phases=4)
    head, body = recipe_lrs()
    assert head == 1e-2 and math.isclose(body.start, 3e-6) and math.isclose(body.stop, 3e-4)
    with pytest.raises(ValueError, match='positive'): recipe_lrs(-1)
    assert small_data_bs(100) == 16 and small_data_bs(10_000) == 64 and small_data_bs(1000) == 64


@pytest.mark.parametrize('strategy', STRATEGIES)
def test_strategies_run(dls, cfg, strategy):
    learn = learner(dls, cfg, pretrained=strategy != 'scratch')
    n = len(learn.opt.param_lists) if learn.opt is not None else len(learn.splitter(learn.model))
    r = fit_strategy(learn, strategy, epochs=1, freeze_epochs=1, cfg=cfg)
    assert isinstance(r, FitResult) and r.strategy == strategy and r.epochs == 2
    assert 0 <= r.accuracy <= 1 and math.isfinite(r.valid_loss) and r.seconds > 0
    assert len(r.lrs) == n and all(v >= 0 for v in r.lrs)
    if strategy == 'feature_extract': assert r.lrs[:-1] == [0.0]*(n-1) and r.lrs[-1] == 1e-2
    elif strategy == 'scratch': assert r.lrs == [1e-2]*n
    else: assert all(v > 0 for v in r.lrs)
    if strategy == 'fine_tune': np.testing.assert_allclose(r.lrs[:-1], even_mults(3e-6, 3e-4, n)[:-1], rtol=1e-9)
    if strategy == 'discriminative': # the body over the slice, the new head at fine_tune's head rate
        np.testing.assert_allclose(r.lrs, [*even_mults(3e-6, 3e-4, n - 1), 1e-2], rtol=1e-9)
    assert r.to_dict()['lrs'] == r.lrs


def test_fit_bad_input(dls, cfg):
    learn = learner(dls, cfg)
    with pytest.raises(ValueError, match='unknown strategy'): fit_strategy(learn, 'warm')
    with pytest.raises(ValueError, match='pretrained=False'): fit_strategy(learn, 'scratch')
    with pytest.raises(ValueError, match='pretrained weights'): fit_strategy(learner(dls, cfg, pretrained=False), 'fine_tune')
    with pytest.raises(ValueError, match='positive epoch budget'): fit_strategy(learn, epochs=0, freeze_epochs=0)
    with pytest.raises(ValueError, match='positive learning rate'): fit_strategy(learn, lr=0)


class _CountValid(Callback):
    "Counts validation batches, across fits."
    def __init__(self): self.n = 0
    def after_batch(self): self.n += not self.training


def test_validate_last_epoch(dls, cfg):
    "Only the last epoch of a fit validates; `final_metrics` reads it and agrees with a prediction pass."
    learn, count = learner(dls, cfg), _CountValid()
    with learn.added_cbs([ValidateLastEpoch(), count]): learn.fit_one_cycle(3, 1e-3)
    assert count.n == len(dls.valid)
    loss, acc = final_metrics(learn)
    np.testing.assert_allclose((loss, acc), final_metrics(learn, from_recorder=False), rtol=1e-5)
    train_loss, train_acc = final_metrics(learn, dl=dls.test_dl(dls.train_ds.items, with_labels=True))
    assert 0 <= train_acc <= 1 and math.isfinite(train_loss)
    count = _CountValid()
    with learn.added_cbs([ValidateLastEpoch(total_epochs=3), count]):
        learn.fit(1, 1e-4)
        learn.fit(2, 1e-4)
    assert count.n == len(dls.valid) # two fits, one validation: after the third epoch


def test_divergence_is_caught(dls, cfg):
    with pytest.raises(DivergedError, match='diverged'): fit_strategy(learner(dls, cfg), 'feature_extract', epochs=4, freeze_epochs=0, lr=1e4, cfg=cfg) # 12 steps


def test_find_lr_restores_weights(dls, cfg):
    learn = learner(dls, cfg)
    before = snapshot(learn.model)
    res = find_lr(learn, num_it=40, end_lr=1, show_plot=False)
    assert set(res.suggestions) == {'valley', 'slide', 'minimum', 'steep'}
    assert all(1e-7 <= v <= 1 for v in res.suggestions.values())
    assert all(torch.equal(before[k], v) for k, v in learn.model.state_dict().items())


def test_compare_strategies_tiny(tiny, cfg):
    df = compare_strategies(tiny, ['fine_tune', 'scratch'], n_per_class=[3], seeds=[0], cfg=cfg, epochs=1, freeze_epochs=1)
    assert list(df.strategy) == ['fine_tune', 'scratch']
    assert {'strategy', 'n_per_class', 'seed', 'accuracy', 'loss', 'seconds'} <= set(df.columns)
    assert (df.n_train == 15).all() and (df.epochs == 2).all()
    with pytest.raises(ValueError, match='unknown strategy'): compare_strategies(tiny, ['nope'], cfg=cfg)


def test_find_lr_short_curve(dls, cfg):
    "A curve too short for `slide` gives NaN for it, not an IndexError."
    res = find_lr(learner(dls, cfg), num_it=20, end_lr=1, show_plot=True)
    assert math.isnan(res.slide) and math.isfinite(res.valley) and res.fig is not None


def _old_runner(learn, strategy, freeze_epochs, epochs):
    "The strategies as they ran before they became plans: the reference for `strategy_plan`."
    head, body = recipe_lrs()
    total = freeze_epochs + epochs
    if strategy == 'fine_tune':
        learn.freeze()
        if freeze_epochs: learn.fit_one_cycle(freeze_epochs, head)
        learn.unfreeze()
        if epochs: learn.fit_one_cycle(epochs, body)
    elif strategy == 'feature_extract':
        learn.freeze()
        learn.fit_one_cycle(total, head)
    elif strategy == 'gradual': fit_gradual(learn, total)
    elif strategy == 'discriminative':
        learn.unfreeze()
        learn.fit_one_cycle(total, np.array([*even_mults(body.start, body.stop, len(learn.opt.param_lists) - 1), head]))
    else:
        learn.unfreeze()
        learn.fit_one_cycle(total, SCRATCH_LR)


def _seeded(tiny, cfg, strategy):
    "A learner on fresh DataLoaders, both from seed 0 (so two of them train alike)."
    set_seed(0)
    d = make_dls(tiny, cfg, seed=0)
    learn = make_learner(d, cfg=cfg, pretrained=strategy != 'scratch')
    learn.remove_cb(ProgressCallback)
    return learn


@pytest.mark.parametrize('strategy,freeze_epochs,epochs', [('fine_tune', 1, 1), ('fine_tune', 0, 2), ('feature_extract', 1, 1),
                                                           ('gradual', 1, 2), ('discriminative', 1, 1), ('scratch', 1, 1)])
def test_plan_trains_as_before(tiny, cfg, strategy, freeze_epochs, epochs):
    "Running a strategy's plan gives bitwise the weights and the numbers of the code it replaced."
    old = _seeded(tiny, cfg, strategy)
    with old.no_logging(), old.added_cbs(rec := PeakLRs()): _old_runner(old, strategy, freeze_epochs, epochs)
    new = _seeded(tiny, cfg, strategy)
    with new.no_logging(): r = fit_strategy(new, strategy, epochs=epochs, freeze_epochs=freeze_epochs, cfg=cfg)
    assert all(torch.equal(a, b) for a, b in zip(old.model.state_dict().values(), new.model.state_dict().values()))
    assert (r.valid_loss, r.accuracy) == final_metrics(old) and r.lrs == rec.lrs and r.phases == rec.fits
    assert list(new.history.epochs.train_loss) == list(old.history.epochs.train_loss)
    plan = strategy_plan(new, strategy, epochs=epochs, freeze_epochs=freeze_epochs, cfg=cfg)
    assert sum(p['epochs'] for p in plan) == freeze_epochs + epochs == r.epochs and len(plan) == len(rec.fits)
