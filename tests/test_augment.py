"Augmentation correctness: deterministic validation, random training, masks that move with their images, sane ranges, odd inputs."
import numpy as np
import pytest
import torch
from PIL import Image

from fastai.torch_core import TensorImage, TensorMask
from fastai.vision.core import PILImage, PILMask
from fastai.vision.augment import aug_transforms
from fasttransform import Pipeline

import finetune_course.augment as aug
from finetune_course.augment import (AUG_PRESETS, AlbumentationsTransform, aug_preset, aug_tfms, augment_batch,
                                     augment_explorer, augment_pair, explorer_frame, policy, require_albumentations,
                                     show_augmentations)
from finetune_course.config import set_seed

A = require_albumentations()
AUGMENTED = [p for p in AUG_PRESETS if p != 'none']


def iou(a, b):
    a, b = np.asarray(a).astype(bool), np.asarray(b).astype(bool)
    return (a & b).sum() / max((a | b).sum(), 1)


def blob_mask(h=48, w=64, seed=0):
    "An off-centre ellipse plus a small square, so flips and rotations change the mask."
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    cy, cx = h*rng.uniform(0.3, 0.45), w*rng.uniform(0.25, 0.4)
    m = (((y-cy)/(h*0.2))**2 + ((x-cx)/(w*0.15))**2) < 1
    m[int(h*0.7):int(h*0.85), int(w*0.7):int(w*0.8)] = True
    return m.astype(np.uint8)


def self_describing(mask, seed=0):
    "An RGB image whose red channel is the mask (255 inside) and whose other channels are noise: its own ground truth."
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 120, (*mask.shape, 3), dtype=np.uint8)
    img[..., 0] = mask*255
    return img


@pytest.fixture
def photo(): return aug.sample_photo(96, 72)


# validation is deterministic, training is random

@pytest.mark.parametrize('name', AUG_PRESETS)
def test_valid_is_deterministic(name, photo):
    a, b = augment_batch(photo, name, n=3, size=32, split='valid'), augment_batch(photo, name, n=3, size=32, split='valid')
    assert torch.equal(a, b)
    assert all(torch.equal(a[0], a[i]) for i in range(3))


@pytest.mark.parametrize('name', AUGMENTED)
def test_train_draws_differ(name, photo):
    xb = augment_batch(photo, name, n=8, size=32)
    distinct = {tuple(x.flatten()[::7].tolist()) for x in xb}
    assert len(distinct) >= 4, f'{name}: only {len(distinct)} distinct draws out of 8'


def test_every_preset_validates_on_the_same_picture(photo):
    ref = augment_batch(photo, 'none', n=1, size=32, split='valid')
    for name in AUGMENTED: # fastai's merged affine step still resamples validation batches with the identity: float rounding only
        assert (augment_batch(photo, name, n=1, size=32, split='valid') - ref).abs().max() < 1e-5, name


def test_none_is_identity_on_train(photo):
    assert torch.equal(augment_batch(photo, 'none', n=2, size=32), augment_batch(photo, 'none', n=2, size=32, split='valid'))


@pytest.mark.parametrize('name', AUGMENTED)
def test_seeded_draws_repeat(name, photo):
    set_seed(3); a = augment_batch(photo, name, n=4, size=32)
    set_seed(3); b = augment_batch(photo, name, n=4, size=32)
    assert torch.equal(a, b)


def test_albumentations_follows_torch_seed():
    "set_seed repeats albumentations draws; differently seeded workers draw differently."
    t = AlbumentationsTransform(A.Compose([A.Affine(rotate=(-40, 40), p=1)]))
    img = PILImage.create(self_describing(blob_mask()))
    def draw(seed): torch.manual_seed(seed); return np.asarray(t(img, split_idx=0))
    assert np.array_equal(draw(1), draw(1))
    assert not np.array_equal(draw(1), draw(2))


def test_albumentations_transform_differs_between_epochs():
    t = AlbumentationsTransform(A.Compose([A.Affine(rotate=(-40, 40), p=1)]))
    img = PILImage.create(self_describing(blob_mask()))
    first, second = np.asarray(t(img, split_idx=0)), np.asarray(t(img, split_idx=0))
    assert not np.array_equal(first, second)
    assert t(img, split_idx=1) is img # the validation set passes through untouched


# value ranges, dtypes and shapes

@pytest.mark.parametrize('name', AUG_PRESETS)
@pytest.mark.parametrize('size', [32, 48])
def test_ranges_and_types(name, size, photo):
    item_tfms, _ = aug_preset(name, size)
    item = Pipeline(item_tfms, split_idx=0)(photo)
    assert isinstance(item, PILImage) and item.mode == 'RGB' and item.size == (size, size)
    xb = augment_batch(photo, name, n=4, size=size)
    assert isinstance(xb, TensorImage) and xb.dtype == torch.float32 and xb.shape == (4, 3, size, size)
    assert 0 <= xb.min() and xb.max() <= 1
    assert torch.isfinite(xb).all()


def test_aug_tfms_is_make_dls_kwargs():
    kw = aug_tfms('strong', 48)
    assert set(kw) == {'item_tfms', 'batch_tfms'}
    assert len(kw['batch_tfms']) > 0
    assert aug_tfms('albumentations', 48)['batch_tfms'] == []


def test_bad_names_explain_themselves():
    with pytest.raises(ValueError, match='choose one of'): aug_preset('medium')
    with pytest.raises(TypeError, match='valid ones are'): policy('default', max_rotation=5)
    with pytest.raises(TypeError, match='preset name'): augment_batch(aug.sample_photo(), 42)
    with pytest.raises(FileNotFoundError): augment_batch('/no/such/image.png')


def test_pipeline_must_return_uint8_numpy():
    img = PILImage.create(self_describing(blob_mask()))
    with pytest.raises(TypeError, match='A.Normalize'): AlbumentationsTransform(A.Compose([A.Normalize()]))(img, split_idx=0)
    from albumentations.pytorch import ToTensorV2
    with pytest.raises(TypeError, match='ToTensorV2'): AlbumentationsTransform(A.Compose([ToTensorV2()]))(img, split_idx=0)


def test_wrong_albumentations_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(aug, 'dist_version', lambda name: '1.4.24')
    with pytest.raises(ImportError, match=r'albumentations==2\.0\.8'): require_albumentations()


def test_import_does_not_ping_pypi():
    "Importing the package sets NO_ALBUMENTATIONS_UPDATE=1 (config does, before anything imports albumentations)."
    import os
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != 'NO_ALBUMENTATIONS_UPDATE'}
    code = ("import os, sys; import finetune_course.augment as aug; "
            "assert 'albumentations' not in sys.modules; aug.require_albumentations(); "
            "print(os.environ.get('NO_ALBUMENTATIONS_UPDATE'))")
    out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == '1'


# masks move with their images

def test_flip_moves_mask_like_numpy():
    m = blob_mask(); img = self_describing(m)
    out_img, out_mask = augment_pair(img, m, A.Compose([A.HorizontalFlip(p=1)]))
    assert np.array_equal(out_mask, m[:, ::-1]) and np.array_equal(out_img, img[:, ::-1])


def test_rotation_moves_mask_like_the_same_rotation():
    m = blob_mask(64, 64)
    rot = A.Compose([A.Affine(rotate=(30, 30), p=1)])
    _, out_mask = augment_pair(self_describing(m), m, rot)
    reference = A.Compose([A.Affine(rotate=(30, 30), p=1)])(image=m*255)['image'] > 127 # the same op, on the mask alone as an image
    assert iou(out_mask, reference) > 0.95
    assert iou(out_mask, m) < 0.8 # it really moved


@pytest.mark.parametrize('seed', range(5))
def test_random_geometry_keeps_mask_aligned(seed):
    m = blob_mask(128, 128, seed=seed); img = self_describing(m, seed)
    exact = 6 # cv2.INTER_NEAREST_EXACT: OpenCV's plain INTER_NEAREST shifts masks by up to half a pixel when resizing
    geo = A.Compose([A.RandomResizedCrop(size=(96, 96), scale=(0.5, 1.), mask_interpolation=exact), A.HorizontalFlip(), A.VerticalFlip(),
                     A.Affine(rotate=(-45, 45), scale=(0.8, 1.2), p=1), A.Perspective(scale=(0.02, 0.08), p=1)], seed=seed)
    for _ in range(5):
        out_img, out_mask = augment_pair(img, m, geo)
        if out_mask.sum() < 100: continue # the crop missed the object
        assert iou(out_img[..., 0] > 127, out_mask) > 0.93 # four resamplings blur the edges a little
        assert iou(out_img[..., 0] > 127, np.roll(out_mask, 3, axis=1)) < 0.9 # while a 3-pixel slip would show


def test_transform_moves_pil_masks_in_items():
    m = blob_mask(); img, mask = PILImage.create(self_describing(m)), PILMask.create(m)
    t = AlbumentationsTransform(A.Compose([A.HorizontalFlip(p=1), A.Affine(rotate=(-40, 40), p=1)]))
    out_img, out_mask, label = t((img, mask, 3), split_idx=0)
    assert isinstance(out_img, PILImage) and isinstance(out_mask, PILMask) and label == 3
    assert iou(np.asarray(out_img)[..., 0] > 127, np.asarray(out_mask)) > 0.9
    assert iou(np.asarray(out_mask), m) < 0.9


def test_fastai_batch_transforms_move_masks():
    m = np.stack([blob_mask(seed=s) for s in range(4)])
    xb = TensorImage(torch.from_numpy(np.stack([self_describing(mm, s) for s, mm in enumerate(m)])).permute(0, 3, 1, 2).float()/255)
    yb = TensorMask(torch.from_numpy(m).long())
    set_seed(0)
    out_x, out_y = Pipeline(aug_transforms(max_rotate=30, max_lighting=0, p_affine=1.), split_idx=0)((xb, yb))
    for x, y in zip(out_x, out_y): assert iou(x[0] > 0.5, y) > 0.9


# odd inputs

ODD = {
    'grayscale': lambda: Image.fromarray(blob_mask()*200),
    'rgba': lambda: Image.fromarray(self_describing(blob_mask())).convert('RGBA'),
    'palette': lambda: Image.fromarray(self_describing(blob_mask())).convert('P'),
    '16-bit': lambda: Image.fromarray(blob_mask().astype(np.uint16)*60000),
    'tiny': lambda: Image.fromarray(self_describing(blob_mask(5, 7))),
    'one pixel': lambda: Image.new('RGB', (1, 1), (10, 200, 30)),
    'long strip': lambda: Image.fromarray(self_describing(blob_mask(6, 300))),
    'array': lambda: self_describing(blob_mask()),
    'tensor': lambda: torch.from_numpy(self_describing(blob_mask())).permute(2, 0, 1),
}

@pytest.mark.parametrize('kind', ODD)
@pytest.mark.parametrize('name', AUG_PRESETS)
def test_odd_inputs_do_not_crash(kind, name):
    xb = augment_batch(ODD[kind](), name, n=2, size=32)
    assert xb.shape == (2, 3, 32, 32) and 0 <= xb.min() and xb.max() <= 1


def test_transform_keeps_mode_and_type_of_direct_inputs():
    t = AlbumentationsTransform(A.Compose([A.HorizontalFlip(p=1), A.RandomBrightnessContrast(p=1)]))
    gray = Image.fromarray(blob_mask()*200)
    assert t(gray, split_idx=0).mode == 'L'
    ti = TensorImage(torch.rand(3, 20, 24))
    out = t(ti, split_idx=0)
    assert isinstance(out, TensorImage) and out.dtype == torch.float32 and out.shape == ti.shape
    tm = TensorMask(torch.randint(0, 3, (20, 24)))
    out_x, out_m = t((ti, tm), split_idx=0)
    assert isinstance(out_m, TensorMask) and out_m.dtype == tm.dtype and torch.equal(out_m, tm.flip(-1))


def test_mismatched_mask_is_a_clear_error():
    with pytest.raises(ValueError, match='must match'): augment_pair(np.zeros((10, 10, 3), np.uint8), np.zeros((9, 10), np.uint8), A.Compose([]))


# seeing it: gallery and explorer, both code paths

def test_gallery_is_a_figure(photo):
    fig = show_augmentations(photo, 'default', n=4, size=32, ncols=5, seed=0)
    assert len([ax for ax in fig.axes if ax.images]) == 5


def test_explorer_static_without_front_end(photo):
    from matplotlib.figure import Figure
    assert isinstance(augment_explorer(photo, size=32, n=2), Figure)


def test_explorer_widgets_update(photo):
    import ipywidgets as W
    from matplotlib.figure import Figure
    box = augment_explorer(photo, size=32, n=2, interactive=True)
    assert isinstance(box, W.VBox) and box.state['frames'] == 1
    box.controls['max_rotate'].value = 60
    assert box.state['frames'] == 2
    box.controls['preset'].value = 'strong' # loads the preset's values and redraws once
    assert box.state['frames'] == 3 and box.controls['max_rotate'].value == policy('strong')['max_rotate']
    assert isinstance(box.redraw(), Figure)
    assert isinstance(explorer_frame(photo, 'albumentations', 32, 2, max_rotate=45.), Figure)


# measuring it: the ablation runner, on a tiny budget

def test_compare_presets_smoke():
    from finetune_course.augment import ablation_summary, compare_presets, plot_ablation
    from finetune_course.data import get_dataset
    path = get_dataset('shapes', n_per_class=8, size=32, valid_pct=0.25, classes=('circle', 'square'))
    res = compare_presets(path, presets=('albumentations',), n_per_class=4, size=32, bs=4, freeze_epochs=1, epochs=0)
    assert list(res.columns) == ['preset', 'seed', 'accuracy', 'train_accuracy', 'seconds', 'n_train', 'n_valid']
    assert res.preset.tolist() == ['albumentations'] and res.n_train.tolist() == [8] and res.n_valid.tolist() == [4]
    assert res.accuracy.between(0, 1).all() and res.train_accuracy.between(0, 1).all()
    assert ablation_summary(res).index.tolist() == ['albumentations']
    assert len(plot_ablation(res).axes) == 2
