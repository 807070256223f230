"Unit tests of finetune_course.gradcam: hooks clean up, Grad-CAM matches captum and CAM, and survives frozen/no_grad/autocast."
import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from captum.attr import LayerAttribution, LayerGradCam
from PIL import Image
from torch import nn

from finetune_course.gradcam import (GradHook, Hook, class_activation_map, default_layer, explain_files, get_layer,
                                     grad_cam, gradcam_files, gradcam_grid, hook_count, layer_name, map_correlation,
                                     mass_in_mask, pointing_game)


def untrained_resnet():
    "timm zero-initialises each residual block's last BatchNorm; scale 1 gives every layer a signal."
    m = timm.create_model('resnet18', pretrained=False, num_classes=4).eval()
    for block in [*m.layer1, *m.layer2, *m.layer3, *m.layer4]: nn.init.ones_(block.bn2.weight)
    return m


@pytest.fixture(scope='module')
def resnet():
    torch.manual_seed(0)
    return untrained_resnet()


@pytest.fixture(scope='module')
def lite0():
    torch.manual_seed(0)
    return timm.create_model('tf_efficientnet_lite0', pretrained=False, num_classes=4).eval()


@pytest.fixture(scope='module')
def x():
    return torch.randn(3, 3, 96, 96, generator=torch.Generator().manual_seed(1))


def captum_maps(model, x, layer, target):
    maps = LayerGradCam(model, get_layer(model, layer)).attribute(x, target=target, relu_attributions=True)
    return LayerAttribution.interpolate(maps, x.shape[-2:], interpolate_mode='bilinear')[:, 0].detach()


def test_hooks_remove_themselves_even_on_errors(resnet):
    with Hook(resnet.layer4) as h:
        resnet(torch.randn(1, 3, 64, 64))
        assert hook_count(resnet) == 1
    assert h.stored.shape == (1, 512, 2, 2) and hook_count(resnet) == 0
    with pytest.raises(RuntimeError):
        with Hook(resnet.layer4), GradHook(resnet.layer3): resnet(torch.randn(1, 5, 64, 64))
    assert hook_count(resnet) == 0
    for m in resnet.modules(): assert not m._forward_hooks and not m._backward_hooks


def test_grad_hook_stores_output_gradient(resnet):
    with Hook(resnet.layer4) as a, GradHook(resnet.layer4) as g:
        resnet(torch.randn(2, 3, 64, 64))[:, 1].sum().backward()
    resnet.zero_grad(set_to_none=True)
    assert g.stored.shape == a.stored.shape and g.stored.abs().sum() > 0 and hook_count(resnet) == 0


def test_get_layer_and_defaults(resnet, lite0):
    assert get_layer(resnet, 'layer4') is resnet.layer4 and get_layer(resnet, resnet.fc) is resnet.fc
    assert get_layer(lite0, 'blocks.4') is lite0.blocks[4]
    wrapped = nn.Sequential(nn.Sequential(lite0), nn.Identity())
    assert get_layer(wrapped, 'conv_head') is lite0.conv_head and layer_name(wrapped, default_layer(wrapped)) == '0.0.conv_head'
    assert default_layer(resnet) is resnet.layer4
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 5, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    assert default_layer(plain) is plain[2]
    with pytest.raises(ValueError, match='ambiguous'): get_layer(resnet, 'conv2')
    with pytest.raises(ValueError, match='no layer named'): get_layer(resnet, 'nope')
    with pytest.raises(ValueError, match='not one of this model'): get_layer(resnet, nn.Linear(1, 1))
    with pytest.raises(TypeError): get_layer(resnet, 3)
    with pytest.raises(ValueError, match='no Conv2d'): default_layer(nn.Linear(2, 2))


@pytest.mark.parametrize('arch,layer', [('lite0', 'conv_head'), ('lite0', 'blocks.4'), ('resnet', 'layer4'), ('resnet', 'layer3')])
def test_matches_captum(arch, layer, resnet, lite0, x):
    model = dict(resnet=resnet, lite0=lite0)[arch]
    target = torch.tensor([0, 1, 3])
    ours, theirs = grad_cam(model, x, layer, target), captum_maps(model, x, layer, target)
    assert ours.shape == (3, 96, 96)
    assert map_correlation(ours, theirs) > 0.99
    assert torch.allclose(ours, theirs, atol=1e-5 * max(theirs.abs().max().item(), 1e-8))
    assert hook_count(model) == 0


def test_equals_cam_for_gap_linear(resnet, x):
    cam = class_activation_map(resnet, x, resnet.layer4, resnet.fc, 2)
    gc = grad_cam(resnet, x, 'layer4', 2, upsample=False)
    h, w = cam.shape[-2:]
    assert torch.allclose(gc, cam.relu() / (h * w), atol=1e-5)
    assert torch.allclose(grad_cam(resnet, x, 'layer4', 2, relu=False, upsample=False), cam / (h * w), atol=1e-5)


def test_frozen_no_grad_autocast_and_inplace(resnet, x):
    frozen = untrained_resnet()
    frozen.load_state_dict(resnet.state_dict())
    frozen.requires_grad_(False).train()
    frozen.bn1.eval()  # as fastai callbacks keep some BatchNorm layers in eval mode while the rest trains
    ref = grad_cam(resnet, x, 'layer4', [0, 1, 2])
    with torch.no_grad(): a = grad_cam(frozen, x, 'layer4', [0, 1, 2])
    with torch.autocast('cpu', dtype=torch.bfloat16): b = grad_cam(frozen, x, 'layer4', [0, 1, 2])
    assert torch.allclose(a, ref, atol=1e-6) and torch.allclose(b, ref, atol=1e-6) and b.dtype == torch.float32
    assert frozen.training and frozen.layer4.training and not frozen.bn1.training, 'every layer keeps its own mode'
    assert all(p.grad is None and not p.requires_grad for p in frozen.parameters())
    on_bn2 = grad_cam(frozen, x, 'layer4.1.bn2', 1, relu=False)  # its output is modified in place (out += identity)
    assert on_bn2.abs().sum() > 0 and hook_count(frozen) == 0


def test_target_validation(resnet, x):
    with pytest.raises(ValueError, match='targets for 3 inputs'): grad_cam(resnet, x, target=[0, 1])
    with pytest.raises(ValueError, match='class indices'): grad_cam(resnet, x, target=7)
    assert hook_count(resnet) == 0
    with torch.no_grad(): pred = resnet(x).argmax(1)
    assert torch.allclose(grad_cam(resnet, x), grad_cam(resnet, x, target=pred))


def test_return_logits_come_from_the_same_pass(resnet, x):
    maps, logits = grad_cam(resnet, x, 'layer4', 1, return_logits=True)
    with torch.no_grad(): ref = resnet(x)
    assert torch.allclose(logits, ref, atol=1e-5) and torch.allclose(maps, grad_cam(resnet, x, 'layer4', 1))
    assert logits.dtype == torch.float32 and hook_count(resnet) == 0


def test_module_does_not_import_fastai():
    "`finetune-course explain` goes through the lean path: gradcam -> inference, datasets (no fastai)."
    code = "import sys, finetune_course.gradcam; sys.exit('fastai' in sys.modules)"
    assert subprocess.run([sys.executable, '-c', code]).returncode == 0, 'importing finetune_course.gradcam pulled in fastai'


def test_localization_scores():
    cams = torch.tensor([[[0., 1.], [3., 0.]], [[2., 0.], [0., 2.]]])
    masks = torch.tensor([[[True, True], [False, False]], [[True, False], [False, False]]])
    assert torch.allclose(mass_in_mask(cams, masks), torch.tensor([0.25, 0.5]))
    assert pointing_game(cams, masks).tolist() == [False, True]
    assert torch.allclose(mass_in_mask(cams, masks[0]), torch.tensor([0.25, 0.5]))  # one mask for all maps


@pytest.fixture(scope='module')
def image_files(tmp_path_factory):
    root = tmp_path_factory.mktemp('imgs')
    rng = np.random.default_rng(0)
    files = []
    for cls in ('a', 'b', 'c'):
        (root/cls).mkdir()
        for i in range(2):
            f = root/cls/f'img{i}.png'
            Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(f)
            files.append(f)
    return files


def test_files_with_saved_model_meta(image_files, tmp_path, lite0):
    from finetune_course.models import build_model
    model = build_model('tf_efficientnet_lite0', 3, pretrained=False).eval()
    meta = dict(classes=['a', 'b', 'c'], mean=[0.5] * 3, std=[0.5] * 3, size=[64, 64], resize=dict(method='squish', pad_mode='reflection'), n_out=3)
    r = gradcam_files(model, image_files, meta, layer='blocks.4')
    assert r.cams.shape == (6, 64, 64) and r.images.shape == (6, 64, 64, 3) and r.layer.endswith('blocks.4')
    assert 0 <= r.images.min() and r.images.max() <= 1 and len(r.preds) == 6
    fig = gradcam_grid(model, image_files, meta, ncols=3)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert len(titles) == 6 and all('actual' in t for t in titles)
    plt.close(fig)
    table = explain_files(model, meta, image_files + image_files[:1], tmp_path/'out', bs=4)
    assert len(table) == 7 and table.overlay.nunique() == 7 and all(Path(p).is_file() for p in table.overlay)
    assert set(table.pred) <= {'a', 'b', 'c'}
    with pytest.raises(ValueError, match='pass meta='): gradcam_files(model, image_files)
    with pytest.raises(FileNotFoundError, match='image not found'): gradcam_files(model, [tmp_path/'missing.png'], meta)
    assert hook_count(model) == 0


def test_files_with_learner(image_files):
    from finetune_course.config import get_config
    from finetune_course.data import make_dls
    from finetune_course.models import make_learner
    cfg = get_config('quick', 'cpu')
    dls = make_dls(image_files[0].parent.parent, cfg, size=32, bs=4, valid_pct=0.5)
    learn = make_learner(dls, pretrained=False, cfg=cfg)
    r = gradcam_files(learn, image_files[:4])
    assert r.cams.shape == (4, 32, 32) and r.vocab == ['a', 'b', 'c'] and r.layer.endswith('conv_head')
    xb = torch.cat([b[0] for b in dls.test_dl(image_files[:4], num_workers=0)])
    assert torch.allclose(r.cams, grad_cam(learn.model, xb), atol=1e-6)
    fig = gradcam_grid(learn, image_files[:4], actual=None, ncols=2)
    assert not any('actual' in ax.get_title() for ax in fig.axes)
    plt.close(fig)

