"""`fit` against hostile arguments, unwritable outputs, full disks and Ctrl-C: one line and the right exit code,
earlier runs left byte-identical, nothing written outside --out and FTC_HOME, and interrupted runs that resume.

Ctrl-C is sent by the CLI's own test hook, `FTC_TEST_INTERRUPT_AT` (see `finetune_course.cli.interrupt_hook`):
`epoch:N` sends SIGINT after the first batch of epoch N (counted across phases), `phase` at the end of the first
phase, `save` twice in the middle of writing the run. Every fit here is tiny (32 px, one or two epochs, 1 thread).
"""
import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

TINY = ('--size', 32, '--epochs', 1, '--freeze-epochs', 1, '--no-report')
DIGITS = ('digits', '--n-per-class', 4, *TINY)


def fit(*args, cwd, hook=None, timeout=600):
    "Run `python -m finetune_course.cli fit ARGS` in `cwd` with one math thread (and the interrupt hook)."
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')
    env.pop('FTC_TEST_INTERRUPT_AT', None)
    if hook: env['FTC_TEST_INTERRUPT_AT'] = hook
    # a job started in the background (`cmd &` without job control) inherits SIGINT ignored, and so would Python:
    # the child gets the default disposition back, as a terminal user's process has it
    return subprocess.run([sys.executable, '-m', 'finetune_course.cli', 'fit', *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def one_line(res, code, *words):
    "The run exited with `code` and said one line on stderr containing `words`, without a traceback."
    assert res.returncode == code, (res.returncode, res.stdout[-2000:], res.stderr[-2000:])
    assert 'Traceback' not in res.stderr, res.stderr[-3000:]
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    for w in words: assert w.lower() in lines[0].lower(), lines[0]
    return lines[0]


def digest(folder: Path) -> dict:
    "Every file under `folder` with the SHA-256 of its bytes."
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob('*')) if p.is_file()}


def metrics_of(run: Path) -> dict:
    return json.loads((run/'metrics.json').read_text())


def loads(run: Path):
    "The run's model loads for inference."
    from finetune_course.inference import load_model
    model, meta = load_model(run)
    assert meta['classes'], meta


@pytest.fixture
def cwd(tmp_path):
    "An empty working folder; each test checks that the command left it as it found it (or with only --out)."
    d = tmp_path/'cwd'
    d.mkdir()
    return d


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    "Two classes of 10 flat-coloured 32 px images: a fit of it is seconds."
    root = tmp_path_factory.mktemp('tiny')
    for name, colour in (('red', (220, 40, 40)), ('blue', (40, 40, 220))):
        (root/name).mkdir()
        rng = np.random.default_rng(len(name))
        for i in range(10):
            arr = np.clip(np.array(colour)[None, None] + rng.normal(0, 25, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(root/name/f'{i}.png')
    return root


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    "Two uninterrupted same-seed CPU runs in two processes (digits, 4 per class, 32 px, 1+1 epochs)."
    root = tmp_path_factory.mktemp('runs')
    for name in ('a', 'b'):
        res = fit(*DIGITS, '--seed', 3, '--out', root/name, cwd=root)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return root


@pytest.mark.parametrize('args, words', [
    (('--bs', 1), '--bs must be at least 2'),
    (('--lr', -1), '--lr must be a positive'),
    (('--lr', 'nan'), '--lr must be a positive finite'),
    (('--freeze-epochs', -1), '--freeze-epochs must be at least 0'),
    (('--seed', -1), '--seed must be at least 0'),
    (('--n-per-class', -1), '--n-per-class must be at least 1'),
    (('--epochs', 0, '--freeze-epochs', 0), 'both 0'),
    (('--size', 4000), '--size must be from 16'),
], ids=['bs1', 'lr-1', 'lr-nan', 'freeze-1', 'seed-1', 'npc-1', 'no-epochs', 'size4000'])
def test_bad_number_fails_before_any_work(args, words, cwd, tmp_path):
    "Refused before the data scan (the data folder does not even exist) and before torch is imported: fast."
    t0 = time.time()
    res = fit(tmp_path/'no-such-data', '--out', tmp_path/'out', *args, cwd=cwd)
    seconds = time.time() - t0
    one_line(res, 2, words)
    assert seconds < 5, f'took {seconds:.1f}s: the check must come before any import or scan'
    assert not (tmp_path/'out').exists() and not any(cwd.iterdir())


def test_unknown_backbone_is_refused_before_the_data_scan(cwd, tmp_path):
    "The registry is asked (timm is imported: seconds), but the data folder is never looked at."
    line = one_line(fit(tmp_path/'no-such-data', '--out', tmp_path/'out', '--backbone', 'does_not_exist', cwd=cwd), 2,
                    "unknown --backbone 'does_not_exist'")
    assert 'FolderError' not in line
    assert not (tmp_path/'out').exists() and not any(cwd.iterdir())
    from finetune_course.cli import UsageError, check_backbone
    with pytest.raises(UsageError, match='did you mean resnet18'): check_backbone('resnet_18')


def test_small_size_warns(tmp_path):
    from finetune_course.cli import check_fit_options
    said = []
    check_fit_options(size=16, log=said.append)
    assert len(said) == 1 and 'feature map is 1x1' in said[0]


def test_second_fit_into_a_run_is_refused(runs, cwd):
    before = digest(runs/'a')
    t0 = time.time()
    one_line(fit(*DIGITS, '--out', runs/'a', cwd=cwd), 2, 'holds an earlier run', '--overwrite')
    assert time.time() - t0 < 5
    assert digest(runs/'a') == before and not any(cwd.iterdir())


def test_out_is_a_file_or_a_folder_of_other_files(tmp_path, cwd):
    (tmp_path/'file.txt').write_text('keep me')
    one_line(fit(*DIGITS, '--out', tmp_path/'file.txt', cwd=cwd), 2, 'is a file')
    one_line(fit(*DIGITS, '--out', tmp_path/'file.txt'/'run', cwd=cwd), 2, 'is not a folder')
    (tmp_path/'mine').mkdir(); (tmp_path/'mine'/'notes.md').write_text('mine')
    one_line(fit(*DIGITS, '--out', tmp_path/'mine', '--overwrite', cwd=cwd), 2, 'not a finetune-course run')
    assert (tmp_path/'file.txt').read_text() == 'keep me' and (tmp_path/'mine'/'notes.md').read_text() == 'mine'
    assert not any(cwd.iterdir())


def test_read_only_out_parent(tmp_path, monkeypatch, capsys):
    "Found before training. As root chmod does not stop writes, so there the probe's error is injected."
    from finetune_course import cli
    parent = tmp_path/'ro'
    parent.mkdir()
    if os.geteuid() == 0:
        def refuse(*a, **k): raise PermissionError(errno.EACCES, 'Permission denied')
        monkeypatch.setattr(cli.tempfile, 'mkdtemp', refuse)
    else:
        parent.chmod(0o555)
    try:
        t0 = time.time()
        code = cli.main(['fit', str(tmp_path/'no-such-data'), '--out', str(parent/'run')])
        err = capsys.readouterr().err
    finally:
        parent.chmod(0o755)
    assert code == 2 and len(err.strip().splitlines()) == 1 and 'not writable' in err, err
    assert time.time() - t0 < 5 and list(parent.iterdir()) == []


def test_disk_full_while_saving_keeps_the_earlier_run(runs, tiny, tmp_path, monkeypatch, capsys):
    "ENOSPC in the save step (injected): one line, exit 2, the earlier run byte-identical, no staging folder left."
    from finetune_course import cli, models
    earlier = tmp_path/'earlier'
    shutil.copytree(runs/'a', earlier)
    before = digest(earlier)
    def full(model, f): raise OSError(errno.ENOSPC, 'No space left on device')
    monkeypatch.setattr(models, '_write_weights', full)
    code = cli.main(['fit', str(tiny), '--out', str(earlier), '--overwrite', *map(str, TINY)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and 'ENOSPC' in err and 'Traceback' not in err, err
    assert digest(earlier) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ['earlier'], 'no staging folder is left'


def test_same_seed_runs_are_identical(runs):
    "Two processes, same seed, CPU: identical model bytes and metrics numbers (all but the wall time)."
    a, b = runs/'a', runs/'b'
    assert (a/'model.safetensors').read_bytes() == (b/'model.safetensors').read_bytes()
    ma, mb = metrics_of(a), metrics_of(b)
    for m in (ma, mb): m.pop('seconds')
    assert ma == mb
    assert sorted(p.name for p in a.iterdir()) == ['checkpoint', 'history.csv', 'metrics.json', 'model.json', 'model.safetensors',
                                                   'model_card.md']
    assert ma['options']['seed'] == 3 and ma['interrupted'] is False


def test_ctrl_c_before_the_first_epoch_saves_nothing(tiny, tmp_path, cwd):
    res = fit(tiny, '--out', tmp_path/'new'/'run', *TINY, cwd=cwd, hook='epoch:1')
    assert res.returncode == 130 and 'Traceback' not in res.stderr, res.stderr[-3000:]
    assert 'interrupted before the first epoch finished: nothing was saved' in res.stdout
    assert not (tmp_path/'new').exists() and not any(cwd.iterdir())


@pytest.mark.parametrize('hook', ['epoch:2', 'save'])
def test_ctrl_c_after_an_epoch_leaves_a_loadable_run(hook, tiny, tmp_path, cwd):
    "Mid-epoch 2: the model of epoch 1 is saved. Twice during the save: the save finishes, then exit 130."
    out = tmp_path/'run'
    res = fit(tiny, '--out', out, *TINY, cwd=cwd, hook=hook)
    assert res.returncode == 130 and 'Traceback' not in res.stderr, res.stdout[-2000:] + res.stderr[-3000:]
    m = metrics_of(out)
    assert m['interrupted'] is True and m['epochs_done'] == (1 if hook == 'epoch:2' else 2)
    assert not (out/'report.html').exists() and not any(cwd.iterdir())
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith('.')] == []
    loads(out)


def test_ctrl_c_between_phases_then_resume(runs, tmp_path, cwd):
    "Interrupted after the frozen phase, resumed to the planned 2 epochs: accuracy as the uninterrupted run's."
    out = tmp_path/'run'
    res = fit(*DIGITS, '--seed', 3, '--out', out, cwd=cwd, hook='phase')
    assert res.returncode == 130 and 'Traceback' not in res.stderr, res.stdout[-2000:] + res.stderr[-3000:]
    assert metrics_of(out)['interrupted'] is True and metrics_of(out)['epochs_done'] == 1
    loads(out)
    res = fit('--resume', out, cwd=cwd)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    m, ref = metrics_of(out), metrics_of(runs/'a')
    assert (m['epochs_done'], m['resumed_from'], m['interrupted']) == (2, 1, False)
    assert abs(m['valid_accuracy'] - ref['valid_accuracy']) <= 0.05, (m['valid_accuracy'], ref['valid_accuracy'])
    loads(out)
    assert not any(cwd.iterdir())


def test_resume_refusals(runs, tiny, capsys):
    from finetune_course.cli import main
    for argv, words in [(['fit', '--resume', str(runs/'a')], 'pass --epochs N'),
                        (['fit', str(tiny), '--resume', str(runs/'a'), '--epochs', '1'], 'leave out the data argument'),
                        (['fit', '--resume', str(tiny)], 'no metrics.json')]:
        before = digest(runs/'a')
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and words in err, err
        assert digest(runs/'a') == before


def test_predict_escapes_control_characters(runs, tmp_path, capsys):
    "A newline in a file name cannot forge a second line of predict's tab-separated output."
    from finetune_course.cli import main
    from finetune_course.data import get_dataset
    image = sorted(Path(get_dataset('digits')).rglob('*.png'))[0]
    odd = tmp_path/'evil\nfake\t9\t1.0000.png'
    shutil.copy(image, odd)
    assert main(['predict', str(runs/'a'), str(odd)]) == 0
    out = capsys.readouterr().out
    assert len(out.strip().splitlines()) == 1 and out.count('\t') == 2 and '\\n' in out, out
