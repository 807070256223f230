"Unit tests of finetune_course.interpret: every number cross-checked against scikit-learn or torchmetrics."
import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support
from torchmetrics.classification import MulticlassCalibrationError

from finetune_course.interpret import (Interpretation, calibrate, calibration_bins, expected_calibration_error,
                                       fit_temperature, nll, per_class_table, reliability_figure)


def random_case(n=500, c=5, seed=0, scale=3.0):
    "Logits whose softmax is the true class distribution, scaled by `scale` (over-confident when > 1)."
    g = torch.Generator().manual_seed(seed)
    true_logits = torch.randn(n, c, generator=g) * 1.5
    targets = torch.multinomial(F.softmax(true_logits, 1), 1, generator=g)[:, 0]
    return true_logits * scale, targets


@pytest.fixture
def case():
    logits, targets = random_case()
    return Interpretation.from_logits(logits, targets, vocab=list('abcde'))


def test_construction_and_errors():
    it = Interpretation([[.7, .3], [.2, .8], [.6, .4]], [0, 0, 1], vocab=['x', 'y'])
    assert it.preds.tolist() == [0, 1, 0] and abs(it.accuracy - 1/3) < 1e-6 and len(it) == 3
    assert torch.allclose(it.losses, -torch.log(torch.tensor([.7, .2, .4])))
    assert it.items == [0, 1, 2] and 'accuracy 0.333' in repr(it)
    with pytest.raises(ValueError, match='from_logits'): Interpretation([[3., -1.]], [0])
    with pytest.raises(ValueError, match='2-D'): Interpretation([.5, .5], [0])
    with pytest.raises(ValueError, match='shape'): Interpretation([[.5, .5]], [0, 1])
    with pytest.raises(ValueError, match='class indices'): Interpretation([[.5, .5]], [2])
    with pytest.raises(ValueError, match='vocab has 3 names'): Interpretation([[.5, .5]], [0], vocab='abc')
    with pytest.raises(ValueError, match='items has 2'): Interpretation([[.5, .5]], [0], items=['a', 'b'])


def test_confusion_matrix_matches_sklearn(case):
    for norm in (None, 'true', 'pred', 'all'):
        ours = case.confusion_matrix(norm)
        ref = confusion_matrix(case.targets, case.preds, labels=range(5), normalize=norm)
        np.testing.assert_allclose(ours.values, ref, atol=1e-12)
        assert list(ours.index) == list('abcde') and ours.index.name == 'actual' and ours.columns.name == 'predicted'
    with pytest.raises(ValueError, match='normalize'): case.confusion_matrix('rows')


def test_most_confused(case):
    mc = case.most_confused()
    cm = case.confusion_matrix().values
    assert mc['count'].sum() == cm.sum() - np.trace(cm)
    assert (np.diff(mc['count'].values) <= 0).all() and (mc.actual != mc.predicted).all()
    assert len(case.most_confused(min_val=10**6)) == 0


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_per_class_table_matches_sklearn(seed):
    g = torch.Generator().manual_seed(seed)
    targets = torch.randint(0, 6, (300,), generator=g)
    preds = torch.where(torch.rand(300, generator=g) < 0.6, targets, torch.randint(0, 6, (300,), generator=g))
    preds[preds == 5] = 4  # class 5 is never predicted: precision 0 by the zero_division=0 convention
    table = per_class_table(preds, targets, vocab=[f'c{i}' for i in range(6)])
    p, r, f, s = precision_recall_fscore_support(targets, preds, labels=range(6), zero_division=0)
    np.testing.assert_allclose(table.iloc[:-2][['precision', 'recall', 'f1']].values.astype(float), np.stack([p, r, f], 1), atol=1e-12)
    assert table.iloc[:-2]['support'].tolist() == s.tolist()
    for avg in ('macro', 'weighted'):
        ref = precision_recall_fscore_support(targets, preds, labels=range(6), average=avg, zero_division=0)[:3]
        np.testing.assert_allclose(table.loc[f'{avg} avg', ['precision', 'recall', 'f1']].values.astype(float), ref, atol=1e-12)
    assert table.loc['c5', 'precision'] == 0
    assert table.loc['macro avg', 'support'] == 300


def test_per_class_table_inputs(case):
    via_method = case.per_class_table()
    via_probs = per_class_table(case.probs, case.targets, case.vocab)
    assert via_method.equals(via_probs)
    assert abs(via_method.loc['weighted avg', 'recall'] - case.accuracy) < 1e-6
    with pytest.raises(ValueError, match='pass targets'): per_class_table([0, 1])


def test_top_losses_labels(case):
    tl = case.top_losses(7)
    assert len(tl) == 7 and (np.diff(tl.loss.values) <= 1e-6).all()
    for idx, row in tl.iterrows():
        probs = case.probs[idx]
        assert row.predicted == case.vocab[int(probs.argmax())] and row.actual == case.vocab[int(case.targets[idx])]
        assert abs(row.p_predicted - probs.max().item()) < 1e-6
        assert abs(row.p_actual - probs[case.targets[idx]].item()) < 1e-6
        assert abs(row.loss + np.log(row.p_actual)) < 1e-4
    assert (tl.p_predicted >= tl.p_actual).all()
    assert case.top_losses(3, largest=False).loss.max() <= tl.loss.min()


def test_ece_hand_example():
    probs = torch.tensor([[.85, .15]] * 4 + [[.65, .35]] * 4)
    targets = torch.tensor([0, 0, 0, 1, 0, 0, 1, 1])
    assert abs(expected_calibration_error(probs, targets, 10) - 0.125) < 1e-7
    bins = calibration_bins(probs, targets, 10)
    assert bins['count'].sum() == 8 and bins.loc[8, 'count'] == 4 and bins.loc[6, 'count'] == 4


def test_ece_edges_match_torchmetrics():
    "Confidences exactly on float32 bin edges land in the same bins as torchmetrics."
    conf = torch.linspace(0, 1, 11)[5:10]  # 0.5, 0.6, ... 0.9 as float32 edges
    probs = torch.stack([conf, 1 - conf], 1)
    targets = torch.tensor([0, 1, 0, 1, 1])
    ref = MulticlassCalibrationError(num_classes=2, n_bins=10, norm='l1')(probs, targets).item()
    assert abs(expected_calibration_error(probs, targets, 10) - ref) < 1e-6


@pytest.mark.parametrize('n_bins', [5, 10, 15])
@pytest.mark.parametrize('seed', [0, 1])
def test_ece_matches_torchmetrics(n_bins, seed):
    logits, targets = random_case(seed=seed)
    probs = F.softmax(logits, 1)
    assert (probs.max(1).values < 1).all()
    ref = MulticlassCalibrationError(num_classes=5, n_bins=n_bins, norm='l1')(probs, targets).item()
    assert abs(expected_calibration_error(probs, targets, n_bins) - ref) < 1e-6


def test_ece_confidence_one_goes_to_last_bin():
    "Documented difference: torchmetrics gives confidence == 1.0 an extra bin; ours folds it into the last bin (np.histogram)."
    probs = torch.tensor([[1., 0.], [.95, .05], [.95, .05]])
    targets = torch.tensor([0, 1, 1])
    bins = calibration_bins(probs, targets, 10)
    assert bins.loc[9, 'count'] == 3 and bins['count'].sum() == 3
    conf = probs.max(1).values.numpy()
    assert np.histogram(conf, bins=10, range=(0, 1))[0].tolist() == bins['count'].tolist()


def test_temperature_scaling_recovers_scale_and_helps_held_out():
    logits, targets = random_case(n=2000, scale=3.0)
    it = Interpretation.from_logits(logits, targets)
    cal, held = it.split(0.5, seed=0)
    assert len(cal) == len(held) == 1000 and not set(cal.items) & set(held.items)
    t = fit_temperature(cal.logits, cal.targets)
    assert 2.5 < t < 3.6, t  # the logits were over-confident by a factor 3
    after = held.with_temperature(t)
    assert abs(after.accuracy - held.accuracy) < 1e-12
    assert after.ece(15) < held.ece(15)
    assert nll(after.logits, after.targets) < nll(held.logits, held.targets)
    res = calibrate(it, seed=0)
    assert abs(res['temperature'] - t) < 1e-9
    assert res['table'].loc['after', 'ece'] < res['table'].loc['before', 'ece']


def test_temperature_under_confident_and_from_probs():
    logits, targets = random_case(n=2000, scale=0.5)
    it = Interpretation(F.softmax(logits, 1), targets)  # probabilities only: log-probs serve as logits
    t = fit_temperature(it.probs.log(), it.targets)
    assert 0.35 < t < 0.65, t
    with pytest.raises(ValueError, match='positive'): it.with_temperature(-1)
    with pytest.raises(ValueError, match='frac'): it.split(1.5)


def test_split_is_seeded(case):
    a1, b1 = case.split(0.3, seed=5)
    a2, b2 = case.split(0.3, seed=5)
    assert a1.items == a2.items and b1.items == b2.items and len(a1) == 150
    assert a1.items != case.split(0.3, seed=6)[0].items


def test_figures(case):
    fig = case.plot_confusion_matrix()
    assert len(fig.axes) == 2
    plt.close(fig)
    fig = reliability_figure({'before': case, 'after': case.with_temperature(2.0)}, n_bins=10)
    assert len(fig.axes) == 2 and 'ECE' in fig.axes[0].get_title()
    plt.close(fig)
    fig = case.plot_reliability()
    assert f'ECE {case.ece():.3f}' in fig.axes[0].get_title()
    plt.close(fig)
    imgs = [np.random.default_rng(i).random((8, 8, 3)) for i in range(len(case))]
    with_imgs = Interpretation(case.probs, case.targets, case.vocab, items=imgs)
    fig = with_imgs.plot_top_losses(4, ncols=2)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert len(titles) == 4 and all('pred ' in t and 'actual ' in t and 'loss ' in t for t in titles)
    plt.close(fig)


def test_from_learner_uses_one_pass():
    from fastai.data.core import DataLoaders
    from fastai.data.load import DataLoader
    from fastai.learner import Learner
    from fastai.losses import CrossEntropyLossFlat
    torch.manual_seed(0)
    x, y = torch.randn(40, 4), torch.randint(0, 3, (40,))
    ds = list(zip(x, y))
    dls = DataLoaders(DataLoader(ds, bs=8, shuffle=True), DataLoader(ds, bs=8))
    dls.vocab = ['a', 'b', 'c']
    learn = Learner(dls, torch.nn.Linear(4, 3), loss_func=CrossEntropyLossFlat())
    calls = []
    handle = learn.model.register_forward_hook(lambda *a: calls.append(1))
    try: it = Interpretation.from_learner(learn)
    finally: handle.remove()
    assert len(calls) == 5 and len(it) == 40 and it.vocab == ['a', 'b', 'c']
    with torch.no_grad(): logits = learn.model(x)
    assert torch.allclose(it.logits, logits, atol=1e-6)
    assert torch.allclose(it.losses, F.cross_entropy(logits, y, reduction='none'), atol=1e-5)
    it.confusion_matrix()
    it.per_class_table()
    it.ece()
    it.top_losses(3)
    assert len(calls) == 5
