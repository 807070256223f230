"The command line on bad input: one clear line and exit code 2, or a finished run that lists what it skipped."
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

EXE = shutil.which('finetune-course', path=str(Path(sys.executable).parent)) or 'finetune-course'


def cli(*args, timeout=600):
    return subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(res, *words):
    assert res.returncode == 2, (res.returncode, res.stdout[-2000:], res.stderr[-2000:])
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    for w in words: assert w.lower() in lines[0].lower(), lines[0]
    assert 'Traceback' not in res.stderr


def write_class(folder: Path, n: int, colour):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(abs(hash(folder.name)) % 2**32)
    for i in range(n):
        arr = np.clip(np.array(colour)[None, None] + rng.normal(0, 25, (24, 24, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(folder/f'{i}.png')


def run_python(code, timeout=600):
    return subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=timeout)


def test_cli_import_is_lean():
    res = run_python("import sys, finetune_course.cli; print(sorted({m.split('.')[0] for m in sys.modules} & {'fastai', 'torch', 'timm'}))")
    assert res.returncode == 0 and res.stdout.strip() == '[]', res.stdout + res.stderr


def test_help_and_module_entry_point():
    from finetune_course.cli import main
    assert main(['--help']) == 0 and main(['fit', '--help']) == 0
    assert main(['fit', '--bs', 'many']) == 2 and main([]) == 2
    res = subprocess.run([sys.executable, '-m', 'finetune_course.cli', 'fit', '--help'], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert 'torchvision/<name>' in res.stdout, 'the --backbone help says what it accepts'
    assert '(one of: fine_tune, feature_extract' in ' '.join(res.stdout.split())


def test_every_option_is_declared_once_in_the_signature():
    "Each parameter of a command function is an option of its command, with the same default."
    from finetune_course.cli import build_parser, cli_params, run_fit, run_explain
    parser = build_parser()
    fit_args = parser.parse_args(['fit'])
    for p in cli_params(run_fit):
        assert getattr(fit_args, p.name) == p.default, p.name
    flags = parser.parse_args(['fit', 'shapes', '--freeze-epochs', '2', '--n-per-class', '5', '--no-pretrained', '--no-report',
                               '--lr', '1e-3', '--strategy', 'gradual', '--aug', 'light', '--profile', 'quick', '--progress'])
    assert (flags.data, flags.freeze_epochs, flags.n_per_class, flags.pretrained, flags.report) == ('shapes', 2, 5, False, False)
    assert (flags.lr, flags.strategy, flags.aug, flags.profile, flags.progress) == (1e-3, 'gradual', 'light', 'quick', True)
    explain = parser.parse_args(['explain', 'run', 'a.png', 'b.png', '--out', 'o'])
    assert (explain.func, explain.model_dir, explain.images, explain.out) == (run_explain, 'run', ['a.png', 'b.png'], 'o')


def test_user_errors_resolve_without_being_imported_by_main():
    from finetune_course.cli import is_user_error, user_errors
    classes = user_errors()
    assert {c.__name__ for c in classes} >= {'FolderError', 'DownloadError', 'WeightsUnavailableError', 'WeightsMismatchError', 'DivergedError'}
    assert all(is_user_error(c('x')) for c in classes) and not is_user_error(ValueError('x'))


def test_missing_path(tmp_path):
    assert_one_line_error(cli('fit', tmp_path/'nope', '--out', tmp_path/'out'), 'not')


def test_empty_folder(tmp_path):
    (tmp_path/'empty').mkdir()
    assert_one_line_error(cli('fit', tmp_path/'empty', '--out', tmp_path/'out'), 'image')


def test_single_class(tmp_path):
    write_class(tmp_path/'data'/'only', 6, (200, 30, 30))
    assert_one_line_error(cli('fit', tmp_path/'data', '--out', tmp_path/'out'), 'class')


def test_bad_arguments(tmp_path):
    assert cli('fit', '--strategy', 'nonsense').returncode == 2
    assert_one_line_error(cli('fit', '--epochs', '-1', '--out', tmp_path/'o'), '--epochs must be at least 0')
    assert_one_line_error(cli('fit', '--epochs', '0', '--freeze-epochs', '0', '--out', tmp_path/'o'), 'both 0')
    assert not (tmp_path/'o').exists()
    assert_one_line_error(cli('predict', tmp_path/'no-model', 'x.png'), 'model.safetensors')


def test_fit_on_broken_images_finishes_and_lists_skipped(tmp_path):
    data = tmp_path/'data'
    write_class(data/'red', 12, (220, 40, 40))
    write_class(data/'blue', 12, (40, 40, 220))
    (data/'red'/'corrupt.jpg').write_bytes(b'\xff\xd8\xff\xe0 this is not a jpeg')
    good = data/'blue'/'0.png'
    Image.open(good).save(data/'blue'/'whole.jpg', quality=90)
    whole = (data/'blue'/'whole.jpg').read_bytes(); (data/'blue'/'truncated.jpg').write_bytes(whole[:len(whole)//2])
    (data/'blue'/'whole.jpg').unlink()
    (data/'red'/'notes.txt').write_text('not an image')
    Image.new('RGB', (1, 1), (255, 0, 0)).save(data/'red'/'tiny.png')
    Image.new('CMYK', (24, 24), (0, 200, 200, 0)).save(data/'red'/'cmyk.jpg')
    Image.new('RGBA', (24, 24), (30, 30, 220, 128)).save(data/'blue'/'rgba.png')
    Image.fromarray((np.ones((24, 24)) * 40000).astype(np.uint16)).save(data/'blue'/'sixteen.png')
    out = tmp_path/'out'
    res = cli('fit', data, '--out', out, '--epochs', 1, '--freeze-epochs', 1, '--size', 32, '--bs', 8, '--no-report', '--no-checkpoint')
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert not (out/'checkpoint').exists(), '--no-checkpoint keeps no checkpoint folder'
    again = cli('fit', '--resume', out)
    assert again.returncode == 2 and 'has no checkpoint' in again.stdout + again.stderr, again.stdout + again.stderr
    metrics = json.loads((out/'metrics.json').read_text())
    skipped = {Path(s['file']).name for s in metrics['skipped_files']}
    assert {'corrupt.jpg', 'truncated.jpg', 'notes.txt', 'tiny.png'} <= skipped, skipped
    assert not {'cmyk.jpg', 'rgba.png', 'sixteen.png'} & skipped, 'odd but valid images are converted, not skipped'
    assert 'skipped' in res.stdout
    for key in ('valid_accuracy', 'valid_loss', 'n_train', 'n_valid', 'classes', 'epochs', 'image_size', 'backbone',
                'pretrained', 'device', 'seconds', 'skipped_files'):
        assert key in metrics, key
    assert metrics['classes'] == ['blue', 'red']


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
    "One tiny end-to-end run shared by the predict/explain tests: discriminative rates, strong augmentation."
    root = tmp_path_factory.mktemp('e2e')
    write_class(root/'data'/'red', 12, (220, 40, 40))
    write_class(root/'data'/'blue', 12, (40, 40, 220))
    res = cli('fit', root/'data', '--out', root/'run', '--epochs', 1, '--freeze-epochs', 1, '--size', 32, '--bs', 8,
              '--strategy', 'discriminative', '--lr', 3e-3, '--aug', 'strong')
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return root


def test_fit_records_strategy_rates_and_aug(run_dir):
    metrics = json.loads((run_dir/'run'/'metrics.json').read_text())
    assert (metrics['strategy'], metrics['aug']) == ('discriminative', 'strong')
    lrs = metrics['lrs']
    assert len(lrs) >= 4 and all(isinstance(v, float) for v in lrs), lrs
    assert lrs == sorted(lrs) and lrs[0] < lrs[-1], 'discriminative: earlier groups train slower'
    from finetune_course.freeze import LR_MULT, UNFROZEN_FACTOR
    assert abs(lrs[-1] - 3e-3) / lrs[-1] < 1e-6, lrs  # --lr is the head's rate: the head is new in every strategy
    assert abs(lrs[-2] - 3e-3*UNFROZEN_FACTOR) / lrs[-2] < 1e-6, lrs  # the body's top group gets a fraction of it
    assert abs(lrs[-2] / lrs[0] - LR_MULT) < 1e-6, lrs
    for name in ('model.safetensors', 'model.json', 'history.csv', 'report.html'): assert (run_dir/'run'/name).exists(), name
    assert metrics['diagnosis']['regime']
    html = (run_dir/'run'/'report.html').read_text()
    for section in ('Learning curves', 'Diagnosis', 'Confusion matrix', 'Per-class metrics', 'Calibration', 'Grad-CAM'): assert section in html, section
    assert 'could not draw this section' not in html
    assert 'src="http' not in html, 'the report is self-contained'


def test_predict_and_explain(run_dir):
    images = sorted((run_dir/'data'/'red').glob('*.png'))[:2]
    res = cli('predict', run_dir/'run', *images)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [l.split('\t') for l in res.stdout.strip().splitlines()]
    assert len(rows) == 2 and all(r[1] in ('red', 'blue') and 0 <= float(r[2]) <= 1 for r in rows), rows
    res = cli('explain', run_dir/'run', *images, '--out', run_dir/'overlays')
    assert res.returncode == 0, res.stderr[-3000:]
    assert len(list((run_dir/'overlays').glob('*_gradcam.png'))) == 2


def test_predict_does_not_import_fastai(run_dir):
    "The lean path: `predict` loads the model with timm and safetensors only."
    image = sorted((run_dir/'data'/'red').glob('*.png'))[0]
    res = run_python(f"import sys; from finetune_course.cli import main; rc = main(['predict', {str(run_dir/'run')!r}, {str(image)!r}]); "
                     "print('rc', rc, 'fastai' in sys.modules)")
    assert res.stdout.strip().splitlines()[-1] == 'rc 0 False', res.stdout[-2000:] + res.stderr[-2000:]


def test_predict_and_explain_on_unreadable_image(run_dir, tmp_path):
    bad = tmp_path/'bad.jpg'; bad.write_bytes(b'not an image at all')
    for command in ('predict', 'explain'):
        assert_one_line_error(cli(command, run_dir/'run', bad, '--out', tmp_path/'o') if command == 'explain' else cli(command, run_dir/'run', bad), 'cannot read')
    assert not (tmp_path/'o').exists(), 'nothing is written before the inputs are checked'


def test_huge_lr_exits_2_without_nan(tmp_path):
    data = tmp_path/'data'
    write_class(data/'red', 8, (220, 40, 40)); write_class(data/'blue', 8, (40, 40, 220))
    res = cli('fit', data, '--out', tmp_path/'out', '--epochs', 1, '--freeze-epochs', 1, '--size', 32, '--bs', 4, '--lr', 1e4, '--no-report')
    assert_one_line_error(res, 'lower')


def test_fit_with_albumentations_is_recorded(tmp_path):
    data = tmp_path/'data'
    write_class(data/'red', 8, (220, 40, 40)); write_class(data/'blue', 8, (40, 40, 220))
    res = cli('fit', data, '--out', tmp_path/'out', '--epochs', 1, '--freeze-epochs', 1, '--size', 32, '--bs', 8,
              '--aug', 'albumentations', '--no-report')
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    metrics = json.loads((tmp_path/'out'/'metrics.json').read_text())
    assert metrics['aug'] == 'albumentations' and 0 <= metrics['valid_accuracy'] <= 1
    assert_one_line_error(cli('fit', data, '--out', tmp_path/'o2', '--aug', 'sparkly'), 'sparkly')
