"Tests for finetune_course.inference: no fastai on the predict path, the same predictions as the fastai learner, model.json checks."
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from finetune_course.config import get_config, set_seed
from finetune_course.inference import (EXTENSION_KEYS, HEAD_DEFAULTS, ModelFormatError, build_network, image_tensor, load_model,
                                       make_head, predict_files, validate_meta)

ROOT = Path(__file__).resolve().parent.parent
FASTAI_FREE = "import sys; bad = sorted(m for m in sys.modules if m.split('.')[0] == 'fastai'); assert not bad, bad"


@pytest.fixture(scope='module')
def fitted(tmp_path_factory):
    "A small digits run: 8 training images per class, 32 px, one epoch; its learner and its saved model folder."
    import fastai.callback.schedule  # noqa: F401 (gives Learner fit_one_cycle)
    from finetune_course.data import get_dataset, make_dls
    from finetune_course.models import make_learner, save_model
    cfg = get_config('quick', 'cpu', size=32, bs=32)
    set_seed(0)
    dls = make_dls(get_dataset('digits'), cfg, n_per_class=8)
    learn = make_learner(dls, cfg=cfg)
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(1, 1e-2)
    return learn, save_model(learn, tmp_path_factory.mktemp('digits')/'run')


def _run(code:str, *args) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS='1')
    return subprocess.run([sys.executable, '-c', code, *map(str, args)], capture_output=True, text=True, env=env, timeout=600)


def test_import_is_fastai_free():
    r = _run('import finetune_course.inference; ' + FASTAI_FREE)
    assert r.returncode == 0, r.stderr[-2000:]


def test_predict_in_a_fresh_process_is_fastai_free(fitted):
    _, out = fitted
    code = ('import sys; from finetune_course.inference import load_model, predict_files; '
            'm, meta = load_model(sys.argv[1]); df = predict_files(m, [sys.argv[2]], meta=meta); '
            'assert df.pred[0] in meta["classes"]; ' + FASTAI_FREE)
    r = _run(code, out, _valid_files(fitted)[0])
    assert r.returncode == 0, r.stderr[-2000:]


def test_cli_predict_is_fastai_free(fitted):
    "`finetune-course predict RUN IMAGE` through the CLI entry point, then no fastai module loaded."
    _, out = fitted
    code = ('import sys; from finetune_course.cli import main; rc = main(["predict", sys.argv[1], sys.argv[2]]); '
            'assert rc == 0, rc; ' + FASTAI_FREE)
    r = _run(code, out, _valid_files(fitted)[0])
    assert r.returncode == 0, r.stderr[-2000:]
    assert '\t' in r.stdout


def _valid_files(fitted):
    learn, _ = fitted
    return [item.file for item in learn.dls.valid_ds.items]


def test_same_predictions_as_the_fastai_learner(fitted):
    "Same classes and probabilities (to 1e-5) as `learn.get_preds` on every validation image."
    learn, out = fitted
    with learn.no_bar(): probs, _ = learn.get_preds(dl=learn.dls.valid)
    df = predict_files(out, _valid_files(fitted))
    assert len(df) == len(probs) > 100
    assert np.abs(df.attrs['probs'] - probs.numpy()).max() < 1e-5
    assert list(df['pred']) == [learn.dls.vocab[i] for i in probs.argmax(1)]


def test_same_inputs_as_the_fastai_pipeline(fitted):
    "The preprocessed tensors equal fastai's validation batch."
    learn, out = fitted
    _, meta = load_model(out)
    xb, _ = learn.dls.valid.one_batch()
    ours = torch.stack([image_tensor(f, meta) for f in _valid_files(fitted)[:len(xb)]])
    assert torch.allclose(ours, xb.cpu(), atol=1e-6)


def test_network_layout_matches_models(fitted):
    "`build_network` rebuilds the exact state-dict layout `models.build_model` trains, for several backbones and heads."
    from finetune_course.models import build_model
    for arch, head in [('tf_efficientnet_lite0', {}), ('resnet18', dict(lin_ftrs=[64], ps=0.2, concat_pool=False)),
                       ('torchvision/resnet18', dict(first_bn=False, bn_final=True))]:
        trained = build_model(arch, 4, pretrained=False, **head)
        meta = validate_meta(dict(format='finetune-course', format_version=1, arch=arch, n_out=4, classes=list('abcd'),
                                  mean=[0.5]*3, std=[0.5]*3, size=[32, 32], head=head))
        rebuilt = build_network(meta)
        assert [(k, v.shape) for k, v in rebuilt.state_dict().items()] == [(k, v.shape) for k, v in trained.state_dict().items()]
        rebuilt.load_state_dict(trained.state_dict(), strict=True)
        x = torch.randn(2, 3, 64, 64)
        assert torch.allclose(rebuilt.eval()(x), trained.eval()(x), atol=1e-5), arch


def test_head_matches_fastai_create_head():
    from fastai.vision.learner import create_head
    for opts in (dict(), dict(lin_ftrs=[32, 16], ps=[0.1, 0.2, 0.3]), dict(ps=0.), dict(pool=False, first_bn=False)):
        ours, theirs = make_head(24, 3, **opts), create_head(24, 3, **opts)
        assert [(k, v.shape) for k, v in ours.state_dict().items()] == [(k, v.shape) for k, v in theirs.state_dict().items()]


def _meta(**kw):
    base = dict(format='finetune-course', format_version=1, arch='tf_efficientnet_lite0', n_out=2, classes=['a', 'b'],
                mean=[0.5]*3, std=[0.5]*3, size=[32, 32])
    return {**base, **kw}


@pytest.mark.parametrize('change, message', [
    (dict(format='other'), "format must be 'finetune-course'"),
    (dict(format_version=2), 'format_version 2 is newer than this finetune-course reads (up to 1); upgrade it'),
    (dict(format_version=0), 'format_version must be a positive integer'),
    (dict(n_out=2.5), 'n_out must be a whole number of classes from 1 to 100,000'),
    (dict(n_out=500_000_000_000, classes=['a', 'b']), 'n_out must be a whole number of classes from 1 to 100,000'),
    (dict(classes=['a', 'a']), 'distinct, non-empty class names'),
    (dict(classes=['a', '']), 'distinct, non-empty class names'),
    (dict(classes=['a', 'b', 'c']), '3 classes but n_out is 2'),
    (dict(mean=[0.5, 0.5]), 'mean must be a list of 3 finite numbers'),
    (dict(mean=[float('nan'), 0.5, 0.5]), 'mean must be a list of 3 finite numbers'),
    (dict(std=[0, 0, 0]), 'std must be a list of 3 positive numbers'),
    (dict(std=[float('inf'), 1, 1]), 'std must be a list of 3 positive numbers'),
    (dict(size=[4000, 4000]), 'size must be [height, width] in pixels, each from 1 to 1024'),
    (dict(arch='../../etc/passwd'), 'arch must be a backbone this library knows'),
    (dict(arch='torchvision/not_a_model'), 'arch must be a backbone this library knows'),
    (dict(head=dict(lin_ftrs=[2**40])), 'lin_ftrs must be null or a list of at most 16 widths, each from 1 to 16,384'),
    (dict(head=[1, 2]), 'head must be an object'),
    (dict(size=[32]), 'size must be [height, width]'),
    (dict(source='keras'), "source must be 'timm' or 'torchvision'"),
    (dict(n_in=1), 'n_in must be 3'),
    (dict(resize=dict(kind='Crop')), "kind must be 'Resize' or 'RandomResizedCrop'"),
    (dict(resize=dict(kind='Resize', pad_mode='wrap')), 'pad_mode must be'),
    (dict(head=dict(y_range=[0, 1])), 'unknown head option'),
    (dict(head=dict(lin_ftrs=[0])), 'lin_ftrs must be null or a list of at most 16 widths'),
    (dict(head=dict(concat_pool='yes')), 'concat_pool must be true or false'),
])
def test_validate_meta_rejects_wrong_known_values(change, message):
    with pytest.raises(ModelFormatError) as e: validate_meta(_meta(**change))
    assert message in str(e.value) and '\n' not in str(e.value), str(e.value)


def test_validate_meta_accepts_extensions_and_fills_defaults():
    meta = validate_meta(_meta(export=dict(onnx='model.onnx'), teacher='resnet50', from_the_future=[1, 2]))
    assert meta['export'] == dict(onnx='model.onnx') and meta['from_the_future'] == [1, 2]
    assert meta['head'] == HEAD_DEFAULTS and meta['resize']['kind'] == 'Resize'
    with pytest.raises(ModelFormatError, match='missing key'): validate_meta({k: v for k, v in _meta().items() if k != 'arch'})


def test_tampered_folders_fail_in_one_line(fitted, tmp_path):
    _, out = fitted
    def copy(name, meta=None, weights=None):
        d = tmp_path/name
        d.mkdir()
        text = json.dumps(meta) if meta is not None else (out/'model.json').read_text()
        (d/'model.json').write_text(text)
        (d/'model.safetensors').write_bytes(weights if weights is not None else (out/'model.safetensors').read_bytes())
        return d
    meta = json.loads((out/'model.json').read_text())
    with pytest.raises(ModelFormatError, match='n_out must be'): load_model(copy('bad-n-out', {**meta, 'n_out': -1}))
    with pytest.raises(ModelFormatError, match='its header is not a JSON object'): load_model(copy('zeros', weights=b'\x00'*64))
    weights = (out/'model.safetensors').read_bytes()
    with pytest.raises(ModelFormatError, match='runs past the end of the file'): load_model(copy('cut', weights=weights[:-1]))
    from finetune_course.weights import WeightsMismatchError
    with pytest.raises(WeightsMismatchError, match='does not fit resnet18 with 10 classes'):
        load_model(copy('arch', {**meta, 'arch': 'resnet18'}))
    with pytest.raises(WeightsMismatchError, match=r'\(3, 512\) in the network'):
        load_model(copy('three', {**meta, 'n_out': 3, 'classes': meta['classes'][:3]}))
    (tmp_path/'json-only').mkdir()
    (tmp_path/'json-only'/'model.json').write_text((out/'model.json').read_text())
    with pytest.raises(FileNotFoundError, match='no model.safetensors'): load_model(tmp_path/'json-only')


def test_every_extension_key_is_accepted():
    meta = validate_meta(_meta(**{k: dict(note=k) for k in EXTENSION_KEYS}))
    assert all(meta[k] == dict(note=k) for k in EXTENSION_KEYS)


def test_a_mismatch_is_found_on_the_meta_device(fitted, tmp_path, monkeypatch):
    "vit_giant (4.8 GB if built) against the digits weights: only a `meta`-device network is built, nothing is loaded."
    import finetune_course.inference as inference
    from finetune_course.weights import WeightsMismatchError
    _, out = fitted
    d = tmp_path/'giant'
    d.mkdir()
    (d/'model.safetensors').write_bytes((out/'model.safetensors').read_bytes())
    (d/'model.json').write_text(json.dumps({**json.loads((out/'model.json').read_text()), 'arch': 'vit_giant_patch14_224'}))
    devices, build = [], inference.build_network
    monkeypatch.setattr(inference, 'build_network', lambda meta: devices.append(torch.get_default_device().type) or build(meta))
    monkeypatch.setattr(inference, '_load_state', lambda *a: pytest.fail('the real network was loaded'))
    with pytest.raises(WeightsMismatchError, match='does not fit vit_giant_patch14_224 with 10 classes: .* tensors missing'):
        load_model(d)
    assert devices == ['meta']
