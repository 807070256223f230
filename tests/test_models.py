"Unit tests for finetune_course.weights and finetune_course.models: conversion, ImageNet sanity, offline errors, groups, BatchNorm, saving."
import functools
import http.server
import threading
import time
import warnings

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn

from finetune_course.config import cache_dir, get_config, set_seed
from finetune_course import weights as W
from finetune_course.weights import (WeightsMismatchError, WeightsUnavailableError, bundled_source_file,
                                     bundled_weights, get_backbone, imagenet_topk, load_backbone, map_state_dict)
from finetune_course.inference import load_model, predict_files
from finetune_course.models import (BodyBNEval, body_bn_layers, bn_param_ids, build_model, make_learner, save_model, stage_splitter,
                                    trains_by_group)


def _tiny_folder(root, n_train=10, n_valid=4, size=40):
    "Three colour classes with noise, as train/ and valid/ folders."
    rng = np.random.default_rng(0)
    colours = dict(red=(200, 40, 40), green=(40, 180, 60), blue=(40, 60, 200))
    for split, n in (('train', n_train), ('valid', n_valid)):
        for name, c in colours.items():
            d = root/split/name; d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                arr = np.clip(np.array(c)[None, None] + rng.normal(0, 40, (size, size + 8, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(arr).save(d/f'{i}.png')
    return root


def _dls(path, size=32, bs=8, item_tfms=None):
    from finetune_course.data import make_dls
    return make_dls(path, get_config('quick', 'cpu'), size=size, bs=bs, item_tfms=item_tfms)


def _item_tfms(kind):
    from fastai.vision.augment import RandomResizedCrop, Resize, ResizeMethod
    return dict(default=None, squish=[Resize(32, method=ResizeMethod.Squish)], pad=[Resize(32, method=ResizeMethod.Pad, pad_mode='zeros')],
                rrc=[RandomResizedCrop(32, min_scale=0.5)], rrc0=[RandomResizedCrop(32, min_scale=0.5, val_xtra=0.)])[kind]


@pytest.fixture(scope='module')
def tiny_path(tmp_path_factory):
    return _tiny_folder(tmp_path_factory.mktemp('tiny'))


@pytest.fixture
def cfg(): return get_config('quick', 'cpu')


# ---- weights: conversion and sanity ------------------------------------------------------------

def test_conversion_maps_every_tensor_in_order():
    src = torch.load(bundled_source_file(), map_location='cpu', weights_only=True)
    target = timm.create_model('tf_efficientnet_lite0', pretrained=False).state_dict()
    mapped = map_state_dict(src, target)
    assert list(mapped) == list(target) and len(mapped) == 296
    assert sum(v.is_floating_point() for v in mapped.values()) == 247
    assert all(mapped[k].shape == target[k].shape for k in target)
    # BatchNorm running statistics come along (ImageNet's, not the defaults 0 and 1)
    assert not torch.equal(mapped['bn1.running_var'], torch.ones(32))
    bad = dict(src); bad['_bn0.running_var'] = torch.ones(16)
    with pytest.raises(WeightsMismatchError, match='tensor #4 _bn0.running_var'): map_state_dict(bad, target)
    with pytest.raises(WeightsMismatchError, match='tensors'): map_state_dict(dict(list(src.items())[:10]), target)


def test_bundled_cache_written_once_atomically():
    p = bundled_weights()
    assert p.parent == cache_dir('weights') and p.suffix == '.safetensors'
    mtime = p.stat().st_mtime_ns
    assert bundled_weights() == p and p.stat().st_mtime_ns == mtime
    assert not list(p.parent.glob('.*.tmp'))
    assert len(load_file(str(p))) == 296


def test_imagenet_sanity_chelsea_and_coffee():
    from skimage import data
    model = load_backbone('tf_efficientnet_lite0', num_classes=1000)
    cat, coffee = imagenet_topk(model, data.chelsea()), imagenet_topk(model, data.coffee())
    assert cat['index'][0] in {281, 282, 283, 285}, cat
    assert coffee['index'][0] in {967, 968, 504}, coffee


def test_registry_normalization():
    assert get_backbone().mean == get_backbone().std == (0.5, 0.5, 0.5)
    assert get_backbone('resnet50').mean == W.IMAGENET_MEAN
    assert get_backbone('torchvision/resnet18').source == 'torchvision'
    with pytest.raises(ValueError, match='unknown backbone'): get_backbone('not_a_model_xyz')


# ---- offline behaviour and local/URL weights ---------------------------------------------------

@pytest.fixture
def empty_home(tmp_path, monkeypatch):
    monkeypatch.setenv('FTC_HOME', str(tmp_path/'home'))
    torch_home = tmp_path/'torch'; old = torch.hub.get_dir(); torch.hub.set_dir(str(torch_home))
    monkeypatch.setenv('HF_HOME', str(tmp_path/'hf'))
    yield tmp_path
    torch.hub.set_dir(old)


def test_offline_error_is_fast_and_helpful(empty_home, monkeypatch):
    if W.cached_weights('resnet50') is not None: pytest.skip('resnet50 weights are cached here')
    t0 = time.time()
    with pytest.raises(WeightsUnavailableError) as e: load_backbone('resnet50', pretrained=True)
    assert time.time() - t0 < 5
    msg = str(e.value)
    assert 'could not download weights for resnet50 (offline?)' in msg and "backbone='tf_efficientnet_lite0'" in msg
    assert 'pretrained=False' in msg and 'weights=PATH' in msg and '\n' not in msg
    # also when the hub is not marked offline but cannot be reached
    monkeypatch.setattr(W, '_hf_offline', lambda: False)
    monkeypatch.setattr(W, 'host_reachable', lambda url, timeout=3.0: False)
    t0 = time.time()
    with pytest.raises(WeightsUnavailableError, match='offline'): build_model('resnet50', 3)
    with pytest.raises(WeightsUnavailableError, match='offline'): load_backbone('torchvision/resnet18')
    assert time.time() - t0 < 5


def test_host_reachable_fails_fast_on_closed_port():
    t0 = time.time()
    assert not W.host_reachable('http://127.0.0.1:9', timeout=1)
    assert time.time() - t0 < 2


def test_local_weights_file(empty_home):
    torch.manual_seed(1)
    ref = timm.create_model('resnet18', pretrained=False)
    f = empty_home/'my-resnet18.safetensors'; save_file(ref.state_dict(), str(f))
    g = empty_home/'my-resnet18.pth'; torch.save(ref.state_dict(), g)
    for path in (f, g):
        m = load_backbone('resnet18', weights=path, num_classes=1000)
        assert torch.equal(m.conv1.weight, ref.conv1.weight) and torch.equal(m.layer4[1].bn2.running_var, ref.layer4[1].bn2.running_var)
    body = build_model('resnet18', 4, weights=f)
    assert torch.equal(body[0].model.conv1.weight, ref.conv1.weight)
    # a file dropped into the cache under the backbone's name is used automatically
    save_file(ref.state_dict(), str(cache_dir('weights')/'resnet18.safetensors'))
    assert torch.equal(load_backbone('resnet18').conv1.weight, ref.conv1.weight)
    with pytest.raises(FileNotFoundError, match='weights file not found'): load_backbone('resnet18', weights=empty_home/'nope.pth')
    with pytest.raises(WeightsMismatchError): load_backbone('resnet34', weights=f)
    with pytest.raises(WeightsMismatchError, match='does not fit'): build_model('convnext_atto', 2, weights=f)


def test_torchvision_local_weights_file(empty_home):
    import torchvision
    torch.manual_seed(2)
    ref = torchvision.models.resnet18(weights=None)
    f = empty_home/'tv-resnet18.pth'; torch.save(ref.state_dict(), f)
    m = build_model('torchvision/resnet18', 2, weights=f)
    assert torch.equal(m[0].conv1.weight, ref.conv1.weight)


def test_download_path_with_local_http_server(empty_home):
    "The online path (URL download through timm, cached in torch's hub dir), served from 127.0.0.1, never the internet."
    torch.manual_seed(3)
    ref = timm.create_model('resnet18', pretrained=False)
    served = empty_home/'srv'; served.mkdir(); torch.save(ref.state_dict(), served/'resnet18-local.pth')
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f'http://127.0.0.1:{server.server_address[1]}/resnet18-local.pth'
        m = load_backbone('resnet18', weights=url, num_classes=1000)
        assert torch.equal(m.fc.weight, ref.fc.weight)
        assert (empty_home/'torch'/'checkpoints'/'resnet18-local.pth').is_file()
    finally: server.shutdown()
    # now cached: works with the server gone
    assert torch.equal(load_backbone('resnet18', weights=url, num_classes=1000).fc.weight, ref.fc.weight)
    with pytest.raises(WeightsUnavailableError): load_backbone('resnet18', weights='http://127.0.0.1:9/other.pth')


# ---- model, groups, learner ---------------------------------------------------------------------

def test_groups_count_and_cover():
    model = build_model('tf_efficientnet_lite0', 10)
    groups = stage_splitter(model)
    assert len(groups) >= 4 and len(groups) == 7
    assert sorted(id(p) for g in groups for p in g) == sorted(id(p) for p in model.parameters())
    assert groups[-1] == list(model[1].parameters())
    for name in ('resnet18', 'convnext_atto', 'torchvision/resnet18', 'torchvision/efficientnet_b0'):
        m = build_model(name, 3, pretrained=False)
        g = stage_splitter(m)
        assert len(g) >= 6, name
        assert sorted(id(p) for x in g for p in x) == sorted(id(p) for p in m.parameters()), name
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        assert len(stage_splitter(nn.Sequential(nn.Sequential(nn.Conv2d(3, 4, 3)), nn.Linear(4, 2)))) == 2
    assert any('no stage structure' in str(x.message) for x in w)


def test_build_model_bad_inputs():
    with pytest.raises(ValueError, match='positive'): build_model(n_out=0, pretrained=False)
    with pytest.raises(TypeError, match='unknown head option'): build_model(n_out=2, pretrained=False, dropout=0.2)
    with pytest.raises(ValueError, match='unknown backbone'): build_model('resnet5O', 2)


def test_learner_frozen_normalized_with_history(tiny_path, cfg):
    dls = _dls(tiny_path)
    learn = make_learner(dls, cfg=cfg)
    assert len(learn.opt.param_groups) == 7
    body_trainable = [n for n, p in learn.model[0].named_parameters() if p.requires_grad]
    assert body_trainable and all(('bn' in n) for n in body_trainable)  # only BatchNorm scale/shift (fastai train_bn)
    assert all(p.requires_grad for p in learn.model[1].parameters())
    from fastai.data.transforms import Normalize
    norms = [t for t in dls.after_batch.fs if isinstance(t, Normalize)]
    assert len(norms) == 1 and torch.allclose(norms[0].mean.flatten().cpu(), torch.tensor([0.5, 0.5, 0.5]))
    names = {type(cb).__name__ for cb in learn.cbs}
    assert {'HistoryCallback', 'DivergenceGuard', 'BodyBNEval'} <= names
    from fastai.metrics import accuracy
    assert learn.metrics[0].func is accuracy
    scratch = make_learner(_dls(tiny_path), pretrained=False, cfg=cfg)
    assert all(p.requires_grad for p in scratch.model.parameters())
    assert not any(isinstance(cb, BodyBNEval) for cb in scratch.cbs)  # random BatchNorm statistics must train


def _stats(model): return [(m.running_mean.clone(), m.running_var.clone()) for m in body_bn_layers(model)]
def _moved(a, b): return max(max((x - y).abs().max().item() for x, y in zip(p, q)) for p, q in zip(a, b))


def test_body_bn_stays_in_inference_mode(tiny_path, cfg):
    for freeze_bn in (True, False):
        set_seed(0)
        learn = make_learner(_dls(tiny_path), cfg=cfg, freeze_bn=freeze_bn)
        before, head_bn = _stats(learn.model), learn.model[1][2].running_mean.clone()
        with learn.no_bar(), learn.no_logging():
            learn.fit(1, 1e-3)
            learn.unfreeze(); learn.fit(1, 1e-4)
        moved = _moved(before, _stats(learn.model))
        assert (moved == 0) if freeze_bn else (moved > 1e-4), (freeze_bn, moved)
        assert not torch.equal(head_bn, learn.model[1][2].running_mean)  # the new head's BatchNorm trains either way


def test_save_load_predict_roundtrip(tiny_path, cfg, tmp_path):
    set_seed(0)
    dls = _dls(tiny_path)
    assert dls.valid_ds.items[0].file.suffix == '.png'
    learn = make_learner(dls, cfg=cfg)
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(2, 1e-2)
    out = save_model(learn, tmp_path/'m')
    assert sorted(p.name for p in out.iterdir()) == ['model.json', 'model.safetensors']
    model, meta = load_model(out)
    assert not model.training
    assert meta['classes'] == ['blue', 'green', 'red'] and meta['size'] == [32, 32] and meta['mean'] == [0.5, 0.5, 0.5]
    assert meta['arch'] == 'tf_efficientnet_lite0' and meta['format_version'] == 1 and meta['n_out'] == 3
    files = [o.file for o in dls.valid_ds.items]
    df = predict_files(out, files)
    probs, targs = learn.get_preds(dl=dls.valid)
    assert list(df.columns) == ['file', 'pred', 'prob']
    assert torch.allclose(torch.tensor(df.attrs['probs']), probs, atol=1e-4)
    assert list(df['pred']) == [dls.vocab[i] for i in probs.argmax(1)]
    acc = float(learn.validate()[1])
    assert abs((df['pred'] == [dls.vocab[i] for i in targs]).mean() - acc) < 1e-6
    # the model object with its meta gives the same
    df2 = predict_files(model, files, meta=meta, bs=5)
    assert np.allclose(df2['prob'], df['prob'], atol=1e-6)
    with pytest.raises(ValueError, match='pass meta='): predict_files(model, files)
    with pytest.raises(FileNotFoundError, match='image not found'): predict_files(out, [tmp_path/'missing.png'])
    with pytest.raises(FileNotFoundError, match='no model.json'): load_model(tmp_path)


def test_save_requires_make_learner(tiny_path, tmp_path):
    from fastai.learner import Learner
    dls = _dls(tiny_path)
    plain = Learner(dls, build_model(n_out=3, pretrained=False))
    with pytest.raises(ValueError, match='make_learner'): save_model(plain, tmp_path/'x')


def test_load_model_needs_no_network_or_pickle(tiny_path, cfg, tmp_path, monkeypatch):
    learn = make_learner(_dls(tiny_path), cfg=cfg)
    out = save_model(learn, tmp_path/'m')
    def no_pickle(*a, **k): raise AssertionError('torch.load called')
    monkeypatch.setattr(torch, 'load', no_pickle)
    monkeypatch.setattr(W, 'host_reachable', lambda *a, **k: (_ for _ in ()).throw(AssertionError('network probed')))
    model, meta = load_model(out)
    for k, v in learn.model.state_dict().items(): assert torch.equal(model.state_dict()[k], v.cpu()), k


@pytest.mark.parametrize('kind', ['squish', 'pad', 'rrc', 'rrc0'])
def test_predict_files_follows_the_validation_resize(tiny_path, cfg, tmp_path, kind):
    "Non-square images: predict_files must crop/squish/pad exactly as the validation pipeline did."
    set_seed(0)
    dls = _dls(tiny_path, item_tfms=_item_tfms(kind))
    learn = make_learner(dls, cfg=cfg)
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-2)
    out = save_model(learn, tmp_path/kind)
    df = predict_files(out, dls.valid_ds.items)
    probs, _ = learn.get_preds(dl=dls.valid)
    assert torch.allclose(torch.tensor(df.attrs['probs']), probs, atol=1e-4), kind


def test_hub_path_hands_over_to_timm_when_reachable(empty_home, monkeypatch):
    "Online (simulated: probe says yes, hub not marked offline), uncached hub weights are fetched by timm itself."
    if W.cached_weights('resnet50') is not None: pytest.skip('resnet50 weights are cached here')
    calls, real = [], timm.create_model
    def fake_create(name, pretrained=False, **kw):
        calls.append((name, pretrained))
        return real(name, pretrained=False, **kw)
    monkeypatch.setattr(W, '_hf_offline', lambda: False)
    monkeypatch.setattr(W, 'host_reachable', lambda url, timeout=3.0: True)
    monkeypatch.setattr(W.timm, 'create_model', fake_create)
    model = load_backbone('resnet50')
    assert calls == [('resnet50', True)] and model.num_classes == 0
    def failing(name, pretrained=False, **kw): raise OSError('connection reset')
    monkeypatch.setattr(W.timm, 'create_model', failing)
    with pytest.raises(WeightsUnavailableError, match='could not download weights for resnet50'): load_backbone('resnet50')


def test_bn_param_ids_and_trains_by_group(tiny_path, cfg):
    model = build_model(n_out=3, pretrained=False)
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert bn_param_ids(model) == {id(p) for m in bns for p in m.parameters()} and len(bns) == 49 + 2
    learn = make_learner(_dls(tiny_path), cfg=cfg)
    learn.opt = None
    assert trains_by_group(learn) == [False]*6 + [True] and learn.opt is not None  # the optimizer is created
    learn.freeze_to(-3)
    assert trains_by_group(learn) == [False]*4 + [True]*3
    learn.unfreeze()
    assert trains_by_group(learn) == [True]*7
    for p in learn.model.parameters(): p.requires_grad_(id(p) in bn_param_ids(learn.model))
    assert trains_by_group(learn) == [False]*7  # BatchNorm scale and shift alone do not make a group train
