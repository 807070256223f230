"""A test split is kept apart and scored once: a test/ folder never trains or validates, `fit --test-frac` carves one,
metrics.json gets `test_*` scores that `predict` reproduces from test_split.json, and bad uses exit 2 in one line."""
import json
import shutil
from pathlib import Path

import pytest

from finetune_course.inference import predict_files
from clirun import cli

MINI = Path(__file__).resolve().parent.parent/'data'/'shapes-mini'
SMALL = ('--size', 32, '--epochs', 1, '--freeze-epochs', 1, '--bs', 8, '--no-checkpoint', '--no-report')



@pytest.fixture(scope='module')
def three_split_folder(tmp_path_factory):
    "The mini shapes as train/ (4 per class), valid/ (2) and test/ (2)."
    root = tmp_path_factory.mktemp('three')/'shapes'
    for c in sorted(d for d in MINI.iterdir() if d.is_dir() and not d.name.startswith('_')):
        for i, f in enumerate(sorted(c.glob('*.png'))):
            split = 'train' if i < 4 else 'valid' if i < 6 else 'test'
            (root/split/c.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(f, root/split/c.name/f.name)
    return root


@pytest.fixture(scope='module')
def run(three_split_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp('runs')/'three'
    res = cli('fit', three_split_folder, *SMALL, '--out', out)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return out, res.stdout


def test_test_folder_is_scored_once_and_reproduced_by_predict(run, three_split_folder):
    out, stdout = run
    m = json.loads((out/'metrics.json').read_text())
    assert (m['n_train'], m['n_valid'], m['n_test']) == (20, 10, 10), m
    assert {'test_accuracy', 'test_loss', 'test_ece', 'test_macro_f1'} <= set(m) and 'test_error' not in m
    assert m['class_counts']['test'] == {c: 2 for c in m['classes']}
    split = json.loads((out/'test_split.json').read_text())
    files = [Path(split['root'])/f for f, _ in split['items']]
    assert {f.parent.parent.name for f in files} == {'test'} and len(files) == 10
    df = predict_files(out, files)
    assert abs((df.pred == [c for _, c in split['items']]).mean() - m['test_accuracy']) < 1e-6
    assert 'test_accuracy=' in stdout and '/ 10 test images' in stdout
    card = (out/'model_card.md').read_text()
    assert '- test (10 images, scored once after training' in card


def test_test_frac_carves_a_test_split(tmp_path):
    out = tmp_path/'frac'
    res = cli('fit', MINI, *SMALL, '--test-frac', 0.25, '--out', out)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    m = json.loads((out/'metrics.json').read_text())
    assert (m['n_test'], m['n_train'] + m['n_valid'], m['options']['test_frac']) == (10, 30, 0.25)
    assert 'held out (0.25 per class), kept apart' in res.stdout


@pytest.mark.parametrize('args, message', [
    (('--test-frac', 1.5), '--test-frac must be a fraction between 0 and 1'),
    (('--test-frac', 0.2), 'has a test folder already; leave out test_frac'),
])
def test_bad_test_frac_is_one_line_exit_2(three_split_folder, tmp_path, args, message):
    res = cli('fit', three_split_folder, *SMALL, *args, '--out', tmp_path/'bad')
    assert res.returncode == 2 and message in res.stderr, res.stderr[-2000:]
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_evaluate_scores_the_run_test_split_as_fit_did(run, three_split_folder, tmp_path):
    out, _ = run
    m = json.loads((out/'metrics.json').read_text())
    res = cli('evaluate', out, '--out', tmp_path/'own')
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    own = json.loads((tmp_path/'own'/'eval.json').read_text())
    assert (own['split'], own['n'], own['tta']) == ('test', 10, None)
    assert abs(own['accuracy'] - m['test_accuracy']) < 1e-6 and abs(own['loss'] - m['test_loss']) < 1e-4
    assert len(own['per_class']) == len(m['classes']) + 2 and len(own['confusion_matrix']) == len(m['classes'])
    html = (tmp_path/'own'/'eval.html').read_text()
    assert 'Evaluated predictions' in html and 'src="http' not in html
    res = cli('evaluate', out, three_split_folder, '--tta', '--out', tmp_path/'folder')
    assert res.returncode == 0, res.stderr[-3000:]
    folder = json.loads((tmp_path/'folder'/'eval.json').read_text())
    assert folder['split'] == 'test' and folder['accuracy'] == own['accuracy'] and 0 <= folder['tta']['accuracy'] <= 1
    assert 'with TTA' in res.stdout


def test_evaluate_refuses_other_classes_and_non_runs(run, tmp_path):
    out, _ = run
    res = cli('evaluate', out, 'digits')
    assert res.returncode == 2 and 'extra (not in the model): 0, 1' in res.stderr, res.stderr[-2000:]
    assert 'missing (in the model, not here): circle' in res.stderr and len(res.stderr.strip().splitlines()) == 1
    res = cli('evaluate', tmp_path)
    assert res.returncode == 2 and 'no model.safetensors' in res.stderr, res.stderr
