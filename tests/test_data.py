"Unit tests for finetune_course.data: folders, odd and broken files, splits, generators, downloads from a local server."
import http.server
import io
import json
import shutil
import tarfile
import threading
import time
import warnings
import zipfile
from collections import Counter
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from finetune_course.config import get_config
from finetune_course.images import check_image, load_rgb
from finetune_course.datasets import (SHAPES, CUE_COLOURS, build_once, load_mask, make_digits, make_messy_folder,
                                      make_shapes, mask_path, shapes_info, MESSY_KEEP, MESSY_SKIP)
from finetune_course.data import (DownloadError, FolderError, RGBImage, arrange_by_filename, download, get_dataset,
                                  labelled_test_dl, make_dls, scan_images, split_stratified, subset_per_class)

CFG = get_config('quick', 'cpu')


def _good(colour, size=24):
    "A small RGB image: a coloured square on grey."
    a = np.full((size, size, 3), 128, np.uint8)
    a[size//4:3*size//4, size//4:3*size//4] = colour
    return Image.fromarray(a)


@pytest.fixture(scope='module')
def broken(tmp_path_factory):
    "A two-class folder with 4 good images per class plus every kind of odd or broken file, built here (not by the library)."
    root = tmp_path_factory.mktemp('broken')/'pets'
    for label, colour in (('cat', (200, 30, 30)), ('dog', (30, 30, 200))):
        (root/label).mkdir(parents=True)
        for i in range(4): _good(colour).save(root/label/f'{label}{i}.png')
    d, rgb = root/'cat', np.asarray(_good((200, 30, 30)))
    keep = {}
    Image.new('CMYK', (24, 24), (0, 255, 255, 0)).save(d/'cmyk.jpg', quality=95)
    keep['cmyk.jpg'] = (255, 0, 0)
    rgba = np.zeros((24, 24, 4), np.uint8)
    rgba[..., 0] = 255  # red, fully transparent
    Image.fromarray(rgba).save(d/'rgba.png')
    keep['rgba.png'] = (255, 255, 255)
    Image.fromarray(np.full((24, 24), 32768, np.uint16)).save(d/'gray16.png')
    keep['gray16.png'] = (128, 128, 128)
    Image.fromarray(rgb).convert('P', palette=Image.Palette.ADAPTIVE, colors=8).save(d/'palette.png')
    keep['palette.png'] = (128, 128, 128)
    Image.new('L', (24, 24), 77).save(d/'gray.png')
    keep['gray.png'] = (77, 77, 77)
    la = Image.new('LA', (24, 24), (0, 0))
    la.save(d/'la.png')
    keep['la.png'] = (255, 255, 255)
    bad = {}
    (d/'corrupt.jpg').write_bytes(bytes(range(256))*8)
    bad['corrupt.jpg'] = 'not a readable image'
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(buf, 'JPEG', quality=95)
    (d/'truncated.jpg').write_bytes(buf.getvalue()[:len(buf.getvalue())//2])
    bad['truncated.jpg'] = 'truncated'
    Image.new('RGB', (1, 1)).save(d/'one_pixel.png')
    bad['one_pixel.png'] = 'too small: 1x1'
    (d/'notes.txt').write_text('not an image')
    bad['notes.txt'] = 'not an image file (.txt)'
    (root/'dog'/'empty.png').write_bytes(b'')
    bad['empty.png'] = 'not a readable image'
    (d/'.DS_Store').write_bytes(b'\0\1')
    (root/'README.md').write_text('ignored: top-level file')  # neither is listed
    return root, keep, bad


def test_scan_lists_exactly_the_bad_files(broken):
    root, keep, bad = broken
    rep = scan_images(root)
    reasons = {Path(f).name: r for f, r in rep.skipped}
    assert set(reasons) == set(bad)
    for name, part in bad.items(): assert part in reasons[name], (name, reasons[name])
    assert rep.classes == ['cat', 'dog'] and rep.counts == {'cat': 4 + len(keep), 'dog': 4}
    assert {Path(f).name for f in rep.good} >= set(keep)
    md = rep._repr_markdown_()
    assert 'truncated.jpg' in md and '| cat |' in md and 'one folder per class' in md


def test_odd_modes_load_as_8bit_rgb(broken):
    root, keep, _ = broken
    for name, colour in keep.items():
        im = load_rgb(root/'cat'/name)
        assert im.mode == 'RGB', name
        got = np.asarray(im)[12, 12] if name not in ('palette.png',) else np.asarray(im)[0, 0]
        assert np.abs(got.astype(int) - colour).max() <= 8, (name, got, colour)
    assert isinstance(RGBImage.create(root/'cat'/'gray16.png'), RGBImage)


def test_make_dls_skips_and_batches_are_rgb_float(broken):
    root, keep, bad = broken
    dls = make_dls(root, CFG, size=32, bs=4, seed=0)
    assert {Path(f).name for f, _ in dls.skipped} == set(bad)
    assert list(dls.vocab) == ['cat', 'dog']
    assert len(dls.train_ds) + len(dls.valid_ds) == 8 + len(keep)
    for dl in (dls.train, dls.valid):  # every remaining file loads: no crash mid-epoch
        for xb, yb in dl:
            assert xb.shape[1:] == (3, 32, 32) and xb.dtype == torch.float32 and 0 <= xb.min() and xb.max() <= 1
    tdl = dls.test_dl([root/'cat'/'gray16.png', root/'cat'/'cmyk.jpg'])
    assert tdl.one_batch()[0].shape == (2, 3, 32, 32)


def test_exif_orientation_is_applied(tmp_path):
    im = Image.new('RGB', (40, 20), (0, 128, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    im.save(tmp_path/'phone.jpg', exif=exif.tobytes())
    assert load_rgb(tmp_path/'phone.jpg').size == (20, 40)


def test_check_image_minimum_side(tmp_path):
    Image.new('L', (8, 8)).save(tmp_path/'d.png')
    Image.new('L', (7, 30)).save(tmp_path/'thin.png')
    assert check_image(tmp_path/'d.png') is None  # digits are 8x8: accepted
    assert 'too small: 7x30' in check_image(tmp_path/'thin.png')


def test_folder_errors(tmp_path):
    with pytest.raises(FolderError, match='folder not found'): scan_images(tmp_path/'nope')
    with pytest.raises(FolderError, match='no images found .*expected one sub-folder per class'): scan_images(tmp_path)
    (tmp_path/'cats').mkdir()
    _good((1, 2, 3)).save(tmp_path/'cats'/'a.png')
    with pytest.raises(FolderError, match=r'only one class \(cats\)'): make_dls(tmp_path, CFG)
    with pytest.raises(FolderError, match='is a file'): scan_images(tmp_path/'cats'/'a.png')
    loose = tmp_path/'loose'
    loose.mkdir()
    _good((1, 2, 3)).save(loose/'x.png')
    with pytest.raises(FolderError, match='no class sub-folders'): scan_images(loose)
    with pytest.raises(FolderError, match='not a folder or a known dataset'): get_dataset('no-such-dataset')
    allbad = tmp_path/'allbad'
    (allbad/'a').mkdir(parents=True)
    (allbad/'b').mkdir()
    (allbad/'a'/'x.jpg').write_bytes(b'junk')
    with pytest.raises(FolderError, match='all 1 files were skipped'): scan_images(allbad)
    msg = str(pytest.raises(FolderError, scan_images, tmp_path/'nope').value)
    assert '\n' not in msg


def test_empty_class_is_left_out_with_a_warning(tmp_path):
    for c in ('a', 'b'):
        (tmp_path/c).mkdir()
        for i in range(3):
            _good((i*40, 0, 0)).save(tmp_path/c/f'{i}.png')
    (tmp_path/'empty_class').mkdir()
    with pytest.warns(UserWarning, match='empty_class'): rep = scan_images(tmp_path)
    assert rep.classes == ['a', 'b'] and rep.empty_classes == ['empty_class']


def test_train_val_layout_and_vocab(tmp_path):
    for split, classes in (('train', 'abc'), ('val', 'abc')):  # 'val' spelling
        for c in classes:
            (tmp_path/split/c).mkdir(parents=True)
            for i in range(3): _good((i*50, 9, 9)).save(tmp_path/split/c/f'{i}.png')
    (tmp_path/'test').mkdir()  # an empty test folder: a warning, and no test split
    with pytest.warns(UserWarning, match='test folder .* has no usable images'):
        dls = make_dls(tmp_path, CFG, size=16)
    assert dls.test_items == [] and labelled_test_dl(dls) is None
    assert list(dls.vocab) == ['a', 'b', 'c']
    assert all('val' in str(it.file) for it in dls.valid_ds.items) and len(dls.valid_ds) == 9 and len(dls.train_ds) == 9
    assert dls.scan.split_counts['valid'] == {'a': 3, 'b': 3, 'c': 3}


def _split_tree(root, splits, classes='ab', n=4):
    "A folder with the given split folders, `n` small images per class in each."
    for split in splits:
        for c in classes:
            (root/split/c).mkdir(parents=True)
            for i in range(n): _good((i*20 % 250, 9, 9)).save(root/split/c/f'{split}{i}.png')


def test_test_folder_is_kept_apart_not_validated_on(tmp_path):
    _split_tree(tmp_path, ('train', 'valid', 'test'))
    dls = make_dls(tmp_path, CFG, size=16)
    assert dls.scan.layout == 'train/valid/test folders'
    assert {it.file.parent.parent.name for it in dls.valid_ds.items} == {'valid'}
    assert {it.file.parent.parent.name for it in dls.test_items} == {'test'} and len(dls.test_items) == 8
    assert len(dls.train_ds) == 8 and dls.scan.split_counts['test'] == {'a': 4, 'b': 4}
    xb, yb = labelled_test_dl(dls).one_batch()
    assert xb.shape[0] == 8 and sorted(yb.tolist()) == [0]*4 + [1]*4


def test_train_and_test_only_gets_a_valid_split_from_train(tmp_path):
    _split_tree(tmp_path, ('train', 'testing'), n=5)
    dls = make_dls(tmp_path, CFG, size=16, valid_pct=0.2, seed=0)
    assert dls.scan.layout == 'train/test folders'
    assert {it.file.parent.parent.name for it in dls.valid_ds.items} == {'train'}
    assert Counter(it.label for it in dls.valid_ds.items) == {'a': 1, 'b': 1} and len(dls.test_items) == 10
    assert 'held out of the training images' in dls.split_note and 'from the test folder' in dls.split_note


def test_test_frac_carves_a_stratified_test_split(tmp_path):
    _split_tree(tmp_path, ('',), n=10)
    a, b = (make_dls(tmp_path, CFG, size=16, test_frac=0.3, seed=s) for s in (0, 0))
    assert a.test_items == b.test_items and Counter(it.label for it in a.test_items) == {'a': 3, 'b': 3}
    held = {it.file for it in a.test_items}
    assert not held & {it.file for it in list(a.train_ds.items) + list(a.valid_ds.items)}
    assert make_dls(tmp_path, CFG, size=16, test_frac=0.3, seed=1).test_items != a.test_items
    few = make_dls(tmp_path, CFG, size=16, test_frac=0.3, seed=0, n_per_class=2)
    assert few.test_items == a.test_items  # a subset of the training images leaves the test split alone


def test_test_class_without_training_images_is_an_error(tmp_path):
    _split_tree(tmp_path, ('train', 'valid'))
    _split_tree(tmp_path, ('test',), classes='az')
    with pytest.raises(FolderError, match='z of .* have test images but no training images'):
        make_dls(tmp_path, CFG, size=16)
    with pytest.raises(FolderError, match='has a test folder already'):
        make_dls(tmp_path, CFG, size=16, test_frac=0.2)


def test_train_without_valid_is_split_stratified(tmp_path):
    for c, n in (('x', 10), ('y', 5)):
        (tmp_path/'train'/c).mkdir(parents=True)
        for i in range(n): _good((i*20, 0, 0)).save(tmp_path/'train'/c/f'{i}.png')
    dls = make_dls(tmp_path, CFG, size=16, valid_pct=0.2, seed=0)
    assert Counter(it.label for it in dls.valid_ds.items) == {'x': 2, 'y': 1}
    assert dls.scan.layout == 'one folder per class'


def test_split_and_subset():
    labels = ['a']*50 + ['b']*7 + ['c']
    s = split_stratified(labels, 0.2, seed=5)
    assert Counter(l for l, v in zip(labels, s) if v) == {'a': 10, 'b': 1}
    assert split_stratified(labels, 0.2, seed=5) == s and split_stratified(labels, 0.2, seed=6) != s
    train = [i for i, v in enumerate(s) if not v]
    with pytest.warns(UserWarning, match=r'fewer than n_per_class=4 .* c \(1\)'): sub = subset_per_class(train, labels, 4, seed=1)
    assert Counter(labels[i] for i in sub) == {'a': 4, 'b': 4, 'c': 1}
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        again = subset_per_class(train, labels, 4, seed=1)
    assert sub == again and set(sub) <= set(train)


def test_digits_dataset_and_few_shot_dls():
    path = get_dataset('digits')
    assert path == make_digits() and (path/'meta.json').exists()
    n = {s: Counter(p.parent.name for p in (path/s).glob('*/*.png')) for s in ('train', 'valid')}
    assert sum(n['train'].values()) + sum(n['valid'].values()) == 1797
    assert all(abs(n['valid'][d] - 0.2*(n['train'][d] + n['valid'][d])) <= 1 for d in n['train'])
    dls = make_dls(path, CFG, size=16, n_per_class=3, seed=0)
    assert Counter(it.label for it in dls.train_ds.items) == {str(d): 3 for d in range(10)}
    assert len(dls.valid_ds) == sum(n['valid'].values()) and dls.train.bs == 30
    assert list(dls.vocab) == [str(d) for d in range(10)] and dls.skipped == []
    a = make_dls(path, CFG, size=16, n_per_class=3, seed=0).train_ds.items
    assert a == dls.train_ds.items and make_dls(path, CFG, size=16, n_per_class=3, seed=1).train_ds.items != a


def test_scan_cache_notices_changed_files(tmp_path, monkeypatch):
    src = get_dataset('digits')/'train'
    monkeypatch.setenv('FTC_HOME', str(tmp_path/'home'))  # keep this test's cache file out of the shared cache
    data = tmp_path/'data'
    for c in ('3', '5'): shutil.copytree(src/c, data/c)
    for i, f in enumerate(sorted((data/'3').glob('*.png'))*6):  # pass the 1,000-file threshold of the cache
        shutil.copy(f, data/'5'/f'extra_{i}.png')
    assert len(list(data.glob('*/*.png'))) >= 1000
    assert scan_images(data).skipped == []
    assert len(list((tmp_path/'home'/'scans').glob('*.json'))) == 1
    victim = sorted((data/'3').glob('*.png'))[0]
    victim.write_bytes(b'broken now')
    assert [Path(f).name for f, _ in scan_images(data).skipped] == [victim.name]


def testbuild_once_is_atomic_and_race_safe(tmp_path):
    def fail(tmp):
        (tmp/'half.txt').write_text('x')
        raise RuntimeError('interrupted')
    with pytest.raises(RuntimeError): build_once(tmp_path/'ds', fail)
    assert not (tmp_path/'ds').exists() and not list(tmp_path.glob('.tmp-*'))
    calls = []
    def slow(tmp):
        calls.append(1)
        (tmp/'f.txt').write_text('x')
        time.sleep(0.3)
        return {}
    threads = [threading.Thread(target=build_once, args=(tmp_path/'ds', slow)) for _ in range(2)]
    for t in threads: t.start()
    for t in threads: t.join()
    assert sorted(p.name for p in (tmp_path/'ds').iterdir()) == ['f.txt', 'meta.json'] and not list(tmp_path.glob('.tmp-*'))


def test_shapes_determinism_hashing_and_layout(tmp_path):
    kw = dict(n_per_class=6, size=40, dest=tmp_path)
    a, b = make_shapes(**kw), make_shapes(**{**kw, 'dest': tmp_path/'again'})
    c = make_shapes(**kw, seed=1)
    assert a.name == b.name and a != c and a.name != c.name
    files = sorted(p.relative_to(a) for p in a.rglob('*.png'))
    assert files == sorted(p.relative_to(b) for p in b.rglob('*.png'))
    assert all((np.asarray(Image.open(a/f)) == np.asarray(Image.open(b/f))).all() for f in files)
    assert not any((np.asarray(Image.open(a/f)) == np.asarray(Image.open(c/f))).all() for f in files if f.parts[0] != '_masks')
    assert len(list(a.glob('train/*/*.png'))) == 5*4 and len(list(a.glob('valid/*/*.png'))) == 5*2
    assert sorted(p.name for p in (a/'train').iterdir()) == sorted(SHAPES)
    flat = make_shapes(**kw, valid_pct=0, classes=('circle', 'cross'))
    assert sorted(p.name for p in flat.iterdir()) == ['_masks', 'circle', 'cross', 'meta.json']
    assert scan_images(flat).classes == ['circle', 'cross']  # _masks is not a class


def test_shapes_masks_and_cue(tmp_path):
    p = make_shapes(n_per_class=10, size=64, dest=tmp_path, shortcut='corner', shortcut_prob=1.0, valid_shortcut_prob=0.0, clutter=1.0)
    info = shapes_info(p)
    for r in info.itertuples():
        assert mask_path(r.file) == r.mask and r.mask.exists()
        img, m = np.asarray(Image.open(r.file)).astype(float), load_mask(r.file)
        assert m.shape == (64, 64) and m.sum() > 20
        core = m.copy()
        core[1:-1, 1:-1] &= m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
        assert (np.linalg.norm(img[core] - r.colour, axis=1) < 30).mean() > 0.98  # the mask covers the shape
        assert r.cue == (r.split == 'train')
        if r.cue: assert tuple(img[1, 1].astype(int)) == CUE_COLOURS[r.label] and not m[:3, :3].any()
    with pytest.raises(FileNotFoundError, match='no _masks/'): mask_path(tmp_path/'x'/'y.png')
    none = shapes_info(make_shapes(n_per_class=10, size=64, dest=tmp_path, shortcut='corner', shortcut_prob=0.0))
    assert not none.cue.any()
    with pytest.raises(ValueError, match='unknown shortcut'): make_shapes(shortcut='stripes', dest=tmp_path)


def test_messy_folder_matches_its_lists(tmp_path):
    rep = scan_images(make_messy_folder(tmp_path))
    assert sorted(Path(f).name for f, _ in rep.skipped) == sorted(MESSY_SKIP)
    assert set(MESSY_KEEP) <= {Path(f).name for f in rep.good}


def test_shipped_sample_folder():
    root = Path(__file__).resolve().parent.parent/'data'/'shapes-mini'
    rep = scan_images(root)
    assert rep.skipped == [] and rep.layout == 'one folder per class' and rep.counts == {c: 8 for c in sorted(SHAPES)}
    assert all(mask_path(f).is_file() for f in rep.good)
    assert json.loads((root/'meta.json').read_text())['params']['seed'] == 2024


def test_arrange_by_filename(tmp_path):
    src = tmp_path/'images'
    src.mkdir()
    for n in ('Bengal_1', 'Bengal_22', 'pug_3', 'pug_4', 'pug_5'): _good((9, 9, 9)).save(src/f'{n}.jpg')
    (src/'list.mat').write_bytes(b'x')
    out = arrange_by_filename(src, tmp_path/'by_class')
    assert {p.name: len(list(p.iterdir())) for p in out.iterdir() if p.is_dir()} == {'Bengal': 2, 'pug': 3}
    assert make_dls(out, CFG, size=16).vocab == ['Bengal', 'pug']


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args): pass


@pytest.fixture
def web(tmp_path):
    "A local HTTP server on 127.0.0.1 serving a .tgz and a .zip of a tiny folder-per-class tree."
    site = tmp_path/'site'
    tree = tmp_path/'tiny'
    for c in ('ants', 'bees'):
        (tree/c).mkdir(parents=True)
        for i in range(3): _good((i*60, 100, 0) if c == 'ants' else (0, 100, i*60)).save(tree/c/f'{c}{i}.png')
    site.mkdir()
    with tarfile.open(site/'tiny.tgz', 'w:gz') as t: t.add(tree, arcname='tiny')
    with zipfile.ZipFile(site/'flat.zip', 'w') as z:  # no wrapper folder in this one
        for f in tree.rglob('*.png'): z.write(f, f.relative_to(tree))
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), partial(_Quiet, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f'http://127.0.0.1:{server.server_address[1]}', site
    server.shutdown()
    server.server_close()


@pytest.mark.net
def test_download_from_local_server(web, tmp_path):
    base, site = web
    p = get_dataset(f'{base}/tiny.tgz', dest=tmp_path/'dl')
    assert sorted(x.name for x in p.iterdir() if x.is_dir()) == ['ants', 'bees']
    dls = make_dls(p, CFG, size=16)
    assert list(dls.vocab) == ['ants', 'bees'] and dls.one_batch()[0].shape[1] == 3
    z = get_dataset(f'{base}/flat.zip', dest=tmp_path/'dl')
    assert sorted(x.name for x in z.iterdir() if x.is_dir()) == ['ants', 'bees']
    (site/'tiny.tgz').unlink()
    assert get_dataset(f'{base}/tiny.tgz', dest=tmp_path/'dl') == p  # cached: not downloaded again
    assert get_dataset(site.parent/'tiny'/'..'/'site'/'flat.zip', dest=tmp_path/'local').is_dir()


def test_download_error_is_one_clear_line(tmp_path):
    with pytest.raises(DownloadError) as e: download('http://127.0.0.1:9/x.tgz', dest=tmp_path, timeout=5)
    msg = str(e.value)
    assert 'could not download http://127.0.0.1:9/x.tgz' in msg and "pass the folder: get_dataset('path/to/folder')" in msg and '\n' not in msg
    with pytest.raises(DownloadError): get_dataset('http://127.0.0.1:9/y.zip', dest=tmp_path)


def test_broken_archive_is_not_kept(tmp_path, web):
    base, site = web
    (site/'bad.tgz').write_bytes(b'this is not an archive')
    with pytest.raises(DownloadError, match='damaged or not a .tgz/.tar/.zip archive'): download(f'{base}/bad.tgz', dest=tmp_path)
    assert not list((tmp_path/'archive').glob('bad*'))  # a broken archive is not kept for next time


def test_class_only_in_valid_is_a_clear_error(tmp_path):
    for split, cls, n in (('train', 'cat', 4), ('train', 'dog', 4), ('valid', 'cat', 2), ('valid', 'Dog', 2)):
        d = tmp_path/split/cls
        d.mkdir(parents=True)
        for i in range(n): Image.new('RGB', (20, 20), (10*i, 0, 0)).save(d/f'{i}.png')
    with pytest.raises(FolderError, match='Dog.*no training images'): make_dls(tmp_path)
