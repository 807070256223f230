"""A missing optional extra is one line naming what to install, with exit code 2 (never a traceback); `doctor` lists
which extras are installed."""
from clirun import cli

HIDE_ALBUMENTATIONS = """
import importlib.metadata as md
_version = md.version
def _fake_version(dist):
    if dist == 'albumentations': raise md.PackageNotFoundError(dist)
    return _version(dist)
md.version = _fake_version
sys.modules['albumentations'] = None
"""



def test_missing_albumentations_is_one_line_exit_2(tmp_path):
    res = cli('fit', 'digits', '--aug', 'albumentations', '--n-per-class', 2, '--size', 32, '--epochs', 1,
              '--out', tmp_path/'run', pre=HIDE_ALBUMENTATIONS)
    assert res.returncode == 2, res.stderr[-2000:]
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "pip install 'finetune-course[augment]'" in res.stderr and 'Traceback' not in res.stderr
    assert not (tmp_path/'run').exists()


def test_doctor_lists_the_extras():
    res = cli('doctor', pre=HIDE_ALBUMENTATIONS)
    assert res.returncode == 0, res.stderr[-2000:]
    line = next(x for x in res.stdout.splitlines() if x.startswith('extras: '))
    assert "augment missing (pip install 'finetune-course[augment]')" in line and 'export installed' in line, line
