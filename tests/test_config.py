"Unit tests for finetune_course.config: the JSON sanitizer, package versions, the albumentations switch."
import json
import math
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from finetune_course.config import Config, environment_report, get_config, json_safe, package_versions


@dataclass
class _Point:
    x: float
    where: Path


def test_json_safe_scalars_and_non_finite():
    assert json_safe(np.float32(0.5)) == 0.5 and type(json_safe(np.float32(0.5))) is float
    assert json_safe(np.int64(3)) == 3 and type(json_safe(np.int64(3))) is int
    assert json_safe(np.bool_(True)) is True
    assert [json_safe(v) for v in (float('nan'), float('inf'), -math.inf, np.float64('nan'))] == [None]*4
    assert json_safe(torch.tensor(2.5)) == 2.5
    assert json_safe(torch.tensor(float('nan'))) is None
    assert json_safe(None) is None and json_safe('a') == 'a' and json_safe(7) == 7


def test_json_safe_containers_arrays_paths_dataclasses():
    obj = dict(lrs=np.array([1e-3, np.nan]), w=torch.tensor([[1, 2]]), run=Path('runs/a'),
               nested=[(1, float('-inf')), {'x': np.arange(2)}], p=_Point(np.float32(1.5), Path('x')),
               keys={Path('k'): 1, 2: 'two'}, s={3})
    out = json_safe(obj)
    assert out == dict(lrs=[1e-3, None], w=[[1, 2]], run='runs/a', nested=[[1, None], {'x': [0, 1]}],
                       p={'x': 1.5, 'where': 'x'}, keys={'k': 1, 2: 'two'}, s=[3])
    json.dumps(out, allow_nan=False)  # raises if anything is left that JSON cannot write


def test_json_safe_config_and_classes():
    d = json_safe(Config(home=Path('/tmp/ftc')))
    assert d['home'] == '/tmp/ftc' and d['size'] == 64
    assert json_safe(Config) is Config  # a dataclass *type* is left alone


def test_package_versions():
    v = package_versions()
    assert v['python'] == platform.python_version() and v['torch'] == torch.__version__
    for k in ('torchvision', 'fastai', 'timm', 'finetune_course'):
        assert isinstance(v[k], str) and v[k], k
    assert package_versions(('no-such-package-ftc',))['no_such_package_ftc'] is None
    json.dumps(v)


def test_environment_report_uses_package_versions():
    env = environment_report(get_config('quick', 'cpu'))
    assert {k: env[k] for k in package_versions()} == package_versions()
    assert env['device'] == 'cpu' and env['profile'] == 'quick' and env['cuda_available'] == torch.cuda.is_available()


@pytest.mark.parametrize('preset, expected', [(None, '1'), ('0', '0')])
def test_config_sets_no_albumentations_update_unless_set(preset, expected):
    env = {k: v for k, v in os.environ.items() if k != 'NO_ALBUMENTATIONS_UPDATE'}
    if preset is not None:
        env['NO_ALBUMENTATIONS_UPDATE'] = preset
    code = "import os, finetune_course.config; print(os.environ['NO_ALBUMENTATIONS_UPDATE'])"
    out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == expected


def test_images_and_datasets_do_not_import_fastai():
    code = ("import sys, finetune_course.images, finetune_course.datasets; "
            "assert 'fastai' not in sys.modules, 'fastai imported'")
    subprocess.run([sys.executable, '-c', code], check=True)
