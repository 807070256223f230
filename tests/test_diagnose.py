"Unit tests for finetune_course.diagnose: rules on synthetic histories, the callbacks on a tiny fastai Learner."
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from fastai.data.core import DataLoaders
from fastai.learner import Learner
from fastai.metrics import accuracy
from torch.utils.data import TensorDataset

from finetune_course.monitor import DivergedError, DivergenceGuard, HistoryCallback, grad_norm
from finetune_course.diagnose import (REGIMES, Diagnosis, diagnose_fit, fit_evidence, plot_data_size_curve,
                                      plot_learning_curves)


def hist(train, valid, **cols):
    return pd.DataFrame(dict(epoch=range(len(train)), train_loss=train, valid_loss=valid, **cols))

OVERFIT = hist([1.2, .8, .5, .3, .15, .08, .04, .02], [1.0, .8, .65, .6, .65, .72, .8, .9],
               accuracy=[.6, .7, .78, .8, .81, .8, .81, .8])
UNDERFIT = hist([2.2, 2.1, 2.0, 1.95], [2.15, 2.05, 1.98, 1.9])
GOOD = hist([1.0, .6, .4, .3, .25, .22], [.8, .5, .38, .33, .31, .305])


def tiny_learner(lr=1e-2, cbs=None, metrics=accuracy, n=256, seed=0):
    "A linear classifier on Gaussian blobs (no backbone needed)."
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 10, generator=g)
    y = (x[:, 0] + 0.5*torch.randn(n, generator=g) > 0).long()
    k = n*3//4
    dls = DataLoaders.from_dsets(TensorDataset(x[:k], y[:k]), TensorDataset(x[k:], y[k:]), bs=32)
    return Learner(dls, torch.nn.Linear(10, 2), loss_func=torch.nn.CrossEntropyLoss(), lr=lr, metrics=metrics, cbs=cbs)


def quiet_fit(learn, *args, one_cycle=False):
    import fastai.callback.schedule  # noqa: F401  (patches fit_one_cycle)
    from fastai.callback.progress import ProgressCallback
    with learn.removed_cbs([cb for cb in learn.cbs if isinstance(cb, ProgressCallback)]), learn.no_logging():
        (learn.fit_one_cycle if one_cycle else learn.fit)(*args)


# ---- rules on synthetic histories -------------------------------------------------------------

def test_classic_overfit():
    d = diagnose_fit(OVERFIT)
    assert d.regime == 'overfitting'
    assert d.evidence['best_epoch'] == 3 and d.evidence['epochs_to_best'] == 4
    assert d.evidence['gap_last'] > d.evidence['gap_at_best'] and d.evidence['gap_trend'] > 0
    assert any('4 epochs' in a for a in d.advice)


def test_underfit_high_loss_and_still_improving():
    assert diagnose_fit(UNDERFIT).regime == 'underfitting'
    # low loss but both curves still falling fast at the end: stopped too early
    d = diagnose_fit(hist([1.0, .5, .25, .12], [.9, .5, .3, .2]))
    assert d.regime == 'underfitting' and 'still falling' in d.reason


def test_good_fit():
    d = diagnose_fit(GOOD)
    assert d.regime == 'good fit' and d.evidence['valid_rise'] < 0.02


def test_gap_alone_is_not_overfitting():
    d = diagnose_fit(hist([.5, .2, .1, .06, .05, .05], [1.2, 1.0, .95, .93, .93, .93]))
    assert d.evidence['gap_last'] > 0.8
    assert d.regime == 'good fit'


def test_valid_rise_without_train_fall_is_not_overfitting():
    d = diagnose_fit(hist([1., .6, .5, .5, .5], [.9, .5, .45, .55, .6]))
    assert d.regime == 'too noisy / too short to tell' and 'not overfitting' in d.reason


def test_nan_is_diverged_and_json_safe():
    d = diagnose_fit(hist([1., .5, float('nan')], [1., .6, float('nan')]))
    assert d.regime == 'diverged'
    json.dumps(d.to_dict(), allow_nan=False)


def test_exploding_loss_is_diverged():
    assert diagnose_fit(hist([2.3, 5., 40.], [2.3, 9., 80.])).regime == 'diverged'


def test_single_epoch_and_empty():
    d = diagnose_fit(hist([1.], [1.1]))
    assert d.regime == 'too noisy / too short to tell' and 'only 1' in d.reason
    assert diagnose_fit(hist([], [])).regime == 'too noisy / too short to tell'


def test_flat_curve():
    flat = hist([.7, .7, .7, .7], [.72, .72, .72, .72])
    assert diagnose_fit(flat).regime == 'too noisy / too short to tell'
    # at the loss of a uniform guess over 2 classes, a flat curve means nothing was learnt
    assert diagnose_fit(flat, chance_loss=math.log(2)).regime == 'underfitting'
    # far below it, a flat curve means it had converged already
    assert diagnose_fit(hist([.05]*4, [.1]*4), chance_loss=math.log(10)).regime == 'good fit'


def test_losses_that_reach_exactly_zero_give_numbers_not_warnings():
    # seen on a tiny, easy user folder: float32 training losses underflow to 0.0 after a few epochs
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter('error', RuntimeWarning)
        d = diagnose_fit(hist([.5, 0., 0., 0.], [.01, .002, .002, .002]), chance_loss=math.log(4))
        ev = fit_evidence(hist([0., 0., 0.], [0., 0., 0.]), chance_loss=math.log(2))
    assert d.regime in REGIMES
    assert all(math.isfinite(v) for v in ev.values() if isinstance(v, float))
    assert ev['train_flat'] and ev['valid_flat']

def test_noisy_valid():
    d = diagnose_fit(hist([1., .8, .7, .6, .55, .5], [1.0, .6, 1.1, .55, 1.2, .6]))
    assert d.regime == 'too noisy / too short to tell' and 'direction' in d.reason


def test_metric_disagreement():
    df = hist([1., .6, .4, .2, .1, .05, .03], [.8, .5, .45, .5, .6, .7, .8], accuracy=[.6, .7, .75, .77, .8, .82, .82])
    d = diagnose_fit(df)
    assert d.regime == 'overfitting' and d.evidence['metric_disagrees']
    assert d.evidence['metric_best_epoch'] == 5 and d.evidence['best_epoch'] == 2
    assert any('accuracy was best' in a for a in d.advice)
    assert diagnose_fit(df.rename(columns={'accuracy': 'error_rate'}).assign(error_rate=lambda d: 1 - d.error_rate)).evidence['metric_best_epoch'] == 5


def test_bad_inputs():
    with pytest.raises(ValueError, match='missing column'): diagnose_fit(pd.DataFrame(dict(epoch=[0], loss=[1.])))
    with pytest.raises(TypeError, match='HistoryCallback'): diagnose_fit([1, 2, 3])
    with pytest.raises(ValueError, match='not a column'): diagnose_fit(GOOD, metric='f1')
    with pytest.raises(ValueError, match='no HistoryCallback'): diagnose_fit(tiny_learner())


def test_repr_lines_dict():
    d = diagnose_fit(OVERFIT)
    assert d.regime in REGIMES and isinstance(d, Diagnosis)
    md = d._repr_markdown_()
    assert md.startswith('**overfitting**') and '| gap_last |' in md
    assert d.lines()[0].startswith('overfitting:') and len(d.lines()) == 1 + len(d.advice)
    json.dumps(d.to_dict(), allow_nan=False)


def test_csv_roundtrip(tmp_path):
    OVERFIT.to_csv(tmp_path/'h.csv', index=False)
    assert diagnose_fit(tmp_path/'h.csv').regime == 'overfitting'


def test_plots():
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig = plot_learning_curves(OVERFIT); assert fig.axes[0].get_title() == 'overfitting'; plt.close(fig)
    fig = plot_learning_curves(hist([1., .5, float('nan')], [1., .6, float('nan')])); plt.close(fig)
    table = pd.DataFrame(dict(n_per_class=[5, 5, 20, 20], accuracy=[.5, .6, .8, .82]))
    fig = plot_data_size_curve(table); plt.close(fig)
    with pytest.raises(ValueError, match='no column'): plot_data_size_curve(table, y='f1')


# ---- callbacks on a tiny Learner ----------------------------------------------------------------

def test_grad_norm():
    m = torch.nn.Linear(3, 1, bias=False)
    m.weight.grad = torch.tensor([[3., 4., 0.]])
    assert float(grad_norm(m)) == pytest.approx(5.)
    assert float(grad_norm(m, scale=torch.tensor(10.))) == pytest.approx(.5)


def test_history_records_batches_and_epochs_across_fits(tmp_path):
    learn = tiny_learner(cbs=HistoryCallback())
    quiet_fit(learn, 2); quiet_fit(learn, 1, one_cycle=True)
    ep, b = learn.history.epochs, learn.history.batches
    assert ep.epoch.tolist() == [0, 1, 2] and ep.fit.tolist() == [0, 0, 1] and ep.fit_epoch.tolist() == [0, 1, 0]
    assert len(b) == 3*6 and b.step.tolist() == list(range(18))
    assert {'train_loss', 'valid_loss', 'accuracy', 'lr_0', 'grad_norm', 'time', 'phase'} <= set(ep.columns)
    assert (b.grad_norm > 0).all() and b.train_loss.notna().all()
    assert b[b.fit == 1].lr_0.nunique() > 1  # one-cycle changes the rate every batch
    # the valid loss and metric equal fastai's own numbers for the last epoch
    assert ep.valid_loss.iloc[-1] == pytest.approx(learn.recorder.values[-1][1], rel=1e-5)
    assert ep.accuracy.iloc[-1] == pytest.approx(learn.recorder.values[-1][2], rel=1e-5)
    # the mean train loss is the batch-size weighted mean of the batch losses
    b0 = b[b.epoch == 0]
    assert ep.train_loss.iloc[0] == pytest.approx(np.average(b0.train_loss, weights=[32]*6), rel=1e-5)
    p = learn.history.to_csv(tmp_path/'h.csv'); assert len(pd.read_csv(p)) == 3
    assert len(pd.read_csv(learn.history.to_csv(tmp_path/'b.csv', batches=True))) == 18
    assert diagnose_fit(learn).regime in REGIMES
    learn.history.reset(); assert len(learn.history.epochs) == 0


def test_history_without_metrics_and_phases():
    learn = tiny_learner(cbs=HistoryCallback(grad_norm=False), metrics=None)
    learn.model = torch.nn.Sequential(torch.nn.Linear(10, 8), torch.nn.Linear(8, 2))
    learn.splitter = lambda m: [list(m[0].parameters()), list(m[1].parameters())]
    learn.create_opt(); learn.freeze(); quiet_fit(learn, 1); learn.unfreeze(); quiet_fit(learn, 1)
    ep = learn.history.epochs
    assert ep.phase.tolist() == ['frozen', 'unfrozen'] and 'accuracy' not in ep
    assert ep.grad_norm.isna().all() and {'lr_0', 'lr_1'} <= set(ep.columns)


def test_history_ignores_lr_find_and_validate():
    learn = tiny_learner(cbs=HistoryCallback())
    from fastai.callback.progress import ProgressCallback
    with learn.removed_cbs([cb for cb in learn.cbs if isinstance(cb, ProgressCallback)]), learn.no_logging():
        import fastai.callback.schedule  # noqa: F401
        learn.lr_find(num_it=20, show_plot=False)
        learn.validate()
    assert len(learn.history.epochs) == 0 and learn.history.n_fits == 0


def test_divergence_guard_stops_within_one_epoch():
    learn = tiny_learner(lr=1e4, cbs=[HistoryCallback(), DivergenceGuard()])
    with pytest.raises(DivergedError, match=r'training diverged at epoch 0 batch \d+ .*try a learning rate 10x lower'):
        quiet_fit(learn, 5)
    ep = learn.history.epochs
    assert len(ep) == 1 and not ep.complete.iloc[0] and ep.n_batches.iloc[0] <= 6
    assert len(learn.recorder.values) == 0  # no epoch (and no nan) reached the metrics
    d = diagnose_fit(learn.history)
    assert d.regime == 'diverged' and 'lr' in d.evidence and 'lower the learning rate' in d.advice[0]
    json.dumps(d.to_dict(), allow_nan=False)


def test_divergence_guard_catches_nan_and_is_quiet_otherwise():
    class NanAfter(torch.nn.Module):
        def __init__(self): super().__init__(); self.lin, self.n = torch.nn.Linear(10, 2), 0
        def forward(self, x):
            self.n += 1
            out = self.lin(x)
            return out*float('nan') if self.n > 3 else out
    learn = tiny_learner(cbs=DivergenceGuard()); learn.model = NanAfter()
    with pytest.raises(DivergedError, match=r'batch 3 \(loss nan\)'): quiet_fit(learn, 2)
    ok = tiny_learner(cbs=DivergenceGuard())
    quiet_fit(ok, 3)  # a healthy run is not stopped
    assert len(ok.recorder.values) == 3
    import fastai.callback.schedule  # noqa: F401
    with ok.no_logging(): ok.lr_find(num_it=30, show_plot=False)  # lr_find's own explosion is not an error


def test_divergence_guard_not_fooled_by_small_spikes_late_in_training():
    # second fit starts at a low loss: a spike to 5x that loss must not stop training (reference is the uniform-guess loss)
    learn = tiny_learner(cbs=DivergenceGuard())
    quiet_fit(learn, 3)
    guard = learn.divergence_guard
    assert guard._ref >= math.log(2)


def test_no_validation_set_is_not_divergence():
    df = hist([1., .6, .4, .3], [float('nan')]*4).assign(n_valid=0, complete=True)
    d = diagnose_fit(df)
    assert d.regime == 'too noisy / too short to tell' and 'validation loss' in d.reason


def test_fp16_loss_scale_is_divided_out():
    from finetune_course.monitor import _loss_scale
    class Scaler:
        def __init__(self, on): self.on, self._scale = on, torch.tensor(1024.)
        def is_enabled(self): return self.on
    class L: pass
    l = L(); assert _loss_scale(l) is None
    l.scaler = Scaler(False); assert _loss_scale(l) is None
    l.scaler = Scaler(True); assert float(_loss_scale(l)) == 1024.
    m = torch.nn.Linear(2, 1, bias=False); m.weight.grad = torch.tensor([[3.*1024, 4.*1024]])
    assert float(grad_norm(m, _loss_scale(l))) == pytest.approx(5.)


def test_history_with_scaled_grads_matches_unscaled():
    "A callback that multiplies the loss by 1024 (as fp16's GradScaler does) must not change the recorded grad norm."
    from fastai.callback.core import Callback

    class FakeScaler:
        def __init__(self): self._scale = torch.tensor(1024.)
        def is_enabled(self): return True

    class ScaleLoss(Callback):
        order = 10
        def before_fit(self): self.learn.scaler = FakeScaler()
        def before_backward(self): self.learn.loss_grad = self.learn.loss_grad*1024
        def before_step(self):
            for p in self.learn.model.parameters():
                if p.grad is not None: p.grad.div_(1024)
        def after_fit(self): self.learn.scaler = None

    from finetune_course.config import set_seed
    set_seed(0); plain = tiny_learner(cbs=HistoryCallback()); quiet_fit(plain, 1)
    set_seed(0); scaled = tiny_learner(cbs=[HistoryCallback(), ScaleLoss()]); quiet_fit(scaled, 1)
    assert np.allclose(plain.history.batches.grad_norm, scaled.history.batches.grad_norm, rtol=1e-4)


def test_tiny_losses_on_an_easy_problem_are_not_read_as_trends():
    "A 300% rise from 0.001 is nothing next to ln(3): good fit, not overfitting; a still-falling tiny loss is not underfitting."
    easy = hist([1.7, .61, 1.7e-4, 8.1e-5, 2e-3, 3.1e-6, 1.8e-6, 2.2e-5, 2.9e-6, 5.4e-6, 3.1e-6],
                [.518, 2.9e-3, 1e-3, 9e-4, 1.4e-3, 2.2e-3, 3.8e-3, 7.3e-3, 7e-3, 5e-3, 3.7e-3], accuracy=[.67] + [1.]*10)
    d = diagnose_fit(easy, chance_loss=math.log(3))
    assert d.regime == 'good fit', d.reason
    assert not any('lower after' in a for a in d.advice), d.advice
    # the same shape scaled up to losses that matter is still overfitting
    big = easy.assign(valid_loss=easy.valid_loss*100, train_loss=easy.train_loss*10)
    big.loc[0, 'valid_loss'] = 1.0
    assert diagnose_fit(big, chance_loss=math.log(3)).regime == 'overfitting'
