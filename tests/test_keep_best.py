"""`fit --keep best|last` and `--patience N`: metrics.json records the kept and the last epoch, `predict` in a fresh
process reproduces the kept model's validation accuracy, `--resume` keeps the best epoch, bad values exit 2; every run
folder has a model card that the report links."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SMALL = ('--n-per-class', 4, '--size', 32, '--epochs', 2, '--freeze-epochs', 1, '--bs', 8)
CARD_HEADINGS = ['Data', 'Recipe', 'Metrics', 'Intended use', 'Limitations', 'Versions']


def cli(*args, timeout=600):
    "`python -m finetune_course.cli ARGS` with one math thread."
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')
    env.pop('FTC_TEST_INTERRUPT_AT', None)
    return subprocess.run([sys.executable, '-m', 'finetune_course.cli', *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env)


def metrics_of(run: Path) -> dict:
    return json.loads((run/'metrics.json').read_text())


@pytest.fixture(scope='module')
def best_run(tmp_path_factory):
    "digits, 4 training images per class, 32 px, 1 frozen + 2 unfrozen epochs, keeping the best epoch."
    run = tmp_path_factory.mktemp('keep')/'best'
    res = cli('fit', 'digits', *SMALL, '--keep', 'best', '--patience', 5, '--out', run)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return run


def test_metrics_record_the_kept_and_the_last_epoch(best_run):
    m = metrics_of(best_run)
    assert (m['kept'], m['n_test'], m['stopped_early'], m['epochs_run']) == ('best', 0, False, 3), m
    assert 1 <= m['best_epoch'] <= 3
    assert m['valid_loss'] <= m['last_valid_loss'] + 1e-9, 'the kept model has the lowest validation loss'
    assert (m['options']['keep'], m['options']['patience']) == ('best', 5)
    if m['best_epoch'] == 3: assert m['valid_accuracy'] == m['last_valid_accuracy']


def test_predict_reproduces_the_kept_accuracy(best_run):
    "A fresh process predicts every validation image: its accuracy is the kept model's `valid_accuracy`."
    m = metrics_of(best_run)
    valid = sorted((Path(m['data'])/'valid').glob('*/*'))
    assert len(valid) == m['n_valid']
    res = cli('predict', best_run, *valid)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [line.split('\t') for line in res.stdout.strip().splitlines()]
    assert len(rows) == len(valid)
    accuracy = sum(Path(f).parent.name == cls for f, cls, _ in rows) / len(rows)
    assert abs(accuracy - m['valid_accuracy']) <= 1.5 / len(rows), (accuracy, m['valid_accuracy'])


def test_model_card_and_report_link(best_run):
    text = (best_run/'model_card.md').read_text()
    assert [line[3:] for line in text.splitlines() if line.startswith('## ')] == CARD_HEADINGS
    m = metrics_of(best_run)
    for words in ('tf_efficientnet_lite0', 'fine_tune', f"best epoch by validation loss: {m['best_epoch']}", '| 0 |',
                  'expected calibration error', 'torch: '):
        assert words in text, words
    assert '<a href="model_card.md">model card</a>' in (best_run/'report.html').read_text()


def test_resume_keeps_the_best_epoch(best_run, tmp_path):
    "One more epoch on a copy of the run: the best epoch of all four is kept, the card is rewritten."
    import shutil
    run = tmp_path/'run'
    shutil.copytree(best_run, run)
    before = metrics_of(run)
    assert (run/'checkpoint'/'best.safetensors').is_file()
    res = cli('fit', '--resume', run, '--epochs', 1, '--no-report')
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    m = metrics_of(run)
    assert (m['kept'], m['epochs_run'], m['resumed_from']) == ('best', 4, 3), m
    assert m['valid_loss'] <= before['valid_loss'] + 1e-9 and m['valid_loss'] <= m['last_valid_loss'] + 1e-9
    assert m['best_epoch'] == (4 if m['valid_loss'] < before['valid_loss'] else before['best_epoch'])
    assert (run/'model_card.md').is_file()


def test_patience_stops_early(tmp_path):
    "--patience 1 with a frozen phase at a rate too high for it: it stops there and skips the unfrozen phase."
    run = tmp_path/'run'
    res = cli('fit', 'digits', '--n-per-class', 4, '--size', 32, '--epochs', 2, '--freeze-epochs', 6, '--bs', 8,
              '--lr', 0.03, '--patience', 1, '--keep', 'best', '--no-report', '--out', run)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    m = metrics_of(run)
    assert m['stopped_early'] and m['epochs_run'] == m['best_epoch'] + 1 < 8, m
    assert 'early stopping after epoch' in res.stdout
    assert m['valid_loss'] < m['last_valid_loss'] and m['kept'] == 'best'
    history = (run/'history.csv').read_text().strip().splitlines()
    assert len(history) == 1 + m['epochs_run'], 'no row for the phases skipped'
    valid = sorted((Path(m['data'])/'valid').glob('*/*'))
    res = cli('predict', run, *valid)
    rows = [line.split('\t') for line in res.stdout.strip().splitlines()]
    accuracy = sum(Path(f).parent.name == cls for f, cls, _ in rows) / len(rows)
    assert abs(accuracy - m['valid_accuracy']) <= 1.5 / len(rows), (accuracy, m['valid_accuracy'])
    res = cli('fit', '--resume', run)  # early stopping ended it: no silent training of the rest of the plan
    assert res.returncode == 2 and 'stopped early after epoch' in res.stderr, res.stderr[-2000:]


@pytest.mark.parametrize('args, words', [(('--keep', 'worst'), 'worst'), (('--patience', -1), '--patience must be at least 0')],
                         ids=['keep-worst', 'patience-1'])
def test_bad_values_exit_2_with_one_line(args, words, tmp_path):
    res = cli('fit', tmp_path/'no-such-data', '--out', tmp_path/'out', *args)
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and 'Traceback' not in res.stderr, res.stderr
    assert not (tmp_path/'out').exists()


def test_one_pass_of_validation_predictions_serves_the_card_and_the_report(tmp_path, monkeypatch):
    "The model card and the report read the same `Interpretation`: a fit predicts the validation set for them once."
    from finetune_course.cli import run_fit
    from finetune_course.interpret import Interpretation
    made = []
    original = Interpretation.from_learner.__func__
    monkeypatch.setattr(Interpretation, 'from_learner', classmethod(lambda cls, *a, **k: made.append(1) or original(cls, *a, **k)))
    run_fit('digits', out=str(tmp_path/'run'), n_per_class=4, size=32, epochs=1, freeze_epochs=1, bs=8, checkpoint=False,
            log=lambda *_: None)
    assert (tmp_path/'run'/'model_card.md').exists() and (tmp_path/'run'/'report.html').exists()
    assert len(made) == 1, f'{len(made)} passes of validation predictions'
