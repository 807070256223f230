"""`finetune-course export RUN` writes model.onnx; `predict --engine onnx` gives the PyTorch engine's classes on every
validation image and probabilities within 1e-4; bad input (not a run, no model.onnx, no onnxruntime) exits 2 in one line."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SMALL = ('--n-per-class', 4, '--size', 32, '--epochs', 1, '--freeze-epochs', 1, '--bs', 8, '--no-checkpoint',
         '--no-report')
ENV = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')


def cli(*args, pre='', timeout=600):
    "`finetune-course ARGS` in a fresh process with one math thread; `pre` runs first (e.g. to hide a package)."
    code = f"import sys\n{pre}\nfrom finetune_course.cli import main\nsys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, '-c', code, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=ENV)


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    "The smallest fit: digits, 4 images per class, 32 px, 1 frozen + 1 unfrozen epoch, then `export`."
    out = tmp_path_factory.mktemp('export')/'run'
    res = cli('fit', 'digits', *SMALL, '--out', out)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    res = cli('export', out)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert len(res.stdout.strip().splitlines()) == 1, res.stdout
    return out


def test_export_writes_onnx_and_records_it(run):
    assert (run/'model.onnx').stat().st_size > 100_000
    info = json.loads((run/'model.json').read_text())['export']['onnx']
    assert (info['file'], info['dynamic_batch'], info['size']) == ('model.onnx', True, [32, 32])
    assert info['max_abs_diff'] <= 1e-4


def test_onnx_engine_matches_torch_on_every_validation_image(run):
    from finetune_course.inference import predict_files
    m = json.loads((run/'metrics.json').read_text())
    valid = sorted(str(f) for f in (Path(m['data'])/'valid').glob('*/*'))
    assert len(valid) == m['n_valid'] > 0
    res = cli('predict', run, *valid, '--engine', 'onnx')
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [line.split('\t') for line in res.stdout.strip().splitlines()]
    torch_df, onnx_df = (predict_files(run, valid, engine=e) for e in ('torch', 'onnx'))
    assert [r[:2] for r in rows] == [[f, c] for f, c in zip(valid, torch_df.pred)], 'the CLI gives the torch classes'
    assert torch_df.pred.tolist() == onnx_df.pred.tolist()
    assert np.abs(torch_df.attrs['probs'] - onnx_df.attrs['probs']).max() <= 1e-4


def one_line_error(res, says):
    assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
    assert len(res.stderr.strip().splitlines()) == 1 and says in res.stderr, res.stderr


def test_bad_input_exits_2_in_one_line(run, tmp_path):
    one_line_error(cli('export', tmp_path), 'no model.safetensors')
    no_onnx = tmp_path/'no-onnx'
    no_onnx.mkdir()
    for f in ('model.json', 'model.safetensors'): (no_onnx/f).write_bytes((run/f).read_bytes())
    image = next((Path(json.loads((run/'metrics.json').read_text())['data'])/'valid').glob('*/*'))
    one_line_error(cli('predict', no_onnx, image, '--engine', 'onnx'), 'run `finetune-course export')
    one_line_error(cli('predict', run, image, '--engine', 'onnx', pre="sys.modules['onnxruntime'] = None"),
                   'pip install onnxruntime')
    one_line_error(cli('export', run, pre="sys.modules['onnxruntime'] = None"), 'pip install onnxruntime')
