"""The exercise checkers that take a student's function: a wrong, unfinished or crashing function gets a hint (a falsy
`Feedback`), never a traceback, and a right one passes."""
import math

import numpy as np
import pytest
import torch

from finetune_course import exercises as ex
from finetune_course.exercises import Feedback
from finetune_course.lr_find import LRFind

# answers a student might hand in half-way: nothing, a crash, a string, a list, a NaN, an array
BAD_ANSWERS = {'none': lambda *a: None, 'raises': lambda *a: 1/0, 'string': lambda *a: 'x', 'list': lambda *a: [1, 2],
               'nan': lambda *a: float('nan'), 'array': lambda *a: np.array([1., 2.])}


def _curve() -> LRFind:
    lrs = np.logspace(-7, 1, 100)
    return LRFind(valley=1e-3, slide=3e-3, minimum=1e-2, steep=5e-4, lrs=lrs, losses=(np.log10(lrs) + 1)**2 + 1)


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
    return ex._summary_run(tmp_path_factory.mktemp('runs')/'demo', 0.9, [0.5, 0.3, 0.4])


def _checkers(run_dir) -> dict:
    "name -> a function that runs the checker on a student's function."
    toy = torch.nn.Linear(3, 2)
    before = {k: v.clone() for k, v in toy.state_dict().items()}
    return {'check_accuracy_of': lambda fn: ex.check_accuracy_of(fn, ex._TOY_PREDS),
            'check_most_changed': lambda fn: ex.check_most_changed(fn, before, toy.state_dict()),
            'check_steepest': lambda fn: ex.check_steepest(fn, _curve()),
            'check_smooth': ex.check_smooth,
            'check_one_cycle': ex.check_one_cycle,
            'check_fine_tune_peaks': ex.check_fine_tune_peaks,
            'check_epochs_to_keep': ex.check_epochs_to_keep,
            'check_first_rise': ex.check_first_rise,
            'check_run_summary': lambda fn: ex.check_run_summary(fn, run_dir),
            'check_fit_argv': ex.check_fit_argv}


@pytest.mark.parametrize('answer', BAD_ANSWERS)
@pytest.mark.parametrize('checker', list(_checkers(None)))
def test_a_bad_answer_gets_a_hint(checker, answer, run_dir):
    fb = _checkers(run_dir)[checker](BAD_ANSWERS[answer])
    assert isinstance(fb, Feedback) and not fb, (checker, answer, fb)
    assert fb.message and '\n' not in fb.message


def test_right_answers_pass(run_dir):
    def one_cycle_lr(peak, pct):
        cos = lambda a, b, p: a + (1 + math.cos(math.pi*(1 - p)))*(b - a)/2
        return cos(peak/25, peak, pct/0.25) if pct < 0.25 else cos(peak, peak/1e5, (pct - 0.25)/0.75)
    def first_rise(h, rise):
        above = h.valid_loss / h.valid_loss.cummin() - 1 >= rise
        return int(h.epoch[above].iloc[0]) if above.any() else None
    assert ex.check_one_cycle(one_cycle_lr)
    assert ex.check_first_rise(first_rise)
    assert ex.check_epochs_to_keep(lambda h: int(h.valid_loss.to_numpy().argmin()) + 1)
    assert ex.check_run_summary(lambda d: ex._run_summary(d), run_dir)
    assert ex.check_fit_argv(lambda data, out, epochs, n: ['fit', data, '--out', out, '--epochs', str(epochs),
                                                          '--n-per-class', str(n)])


def test_check_mirrors_hints_instead_of_raising():
    assert not ex.check_mirrors(lambda preset: 1/0)
    assert not ex.check_mirrors(lambda preset: preset == 'strong')
