"Checkpoints every epoch and resume (`fit_strategy(checkpoint=, resume=, extra_epochs=)`): equal to an uninterrupted run."
import json
import signal
import shutil
import threading
import warnings
from pathlib import Path

import pytest
import torch
from fastai.callback.core import Callback
from fastai.callback.progress import ProgressCallback
from safetensors import safe_open

import finetune_course.strategies as strategies
from finetune_course.config import get_config, set_seed
from finetune_course.data import get_dataset, make_dls
from finetune_course.models import make_learner
from finetune_course.strategies import (CHECKPOINT_FILES, CheckpointError, _checkpoint_content, _Run, _save_checkpoint,
                                        fit_strategy, read_checkpoint, strategy_plan)

warnings.filterwarnings('ignore', category=UserWarning)


@pytest.fixture(scope='module')
def cfg(): return get_config('quick', 'cpu', size=32, bs=16)


@pytest.fixture(scope='module')
def data():
    "5 shape classes, 8 training (2 batches of 16 in all) and 2 validation images each, 32 px."
    return get_dataset('shapes', n_per_class=10, size=32)


def learner(data, cfg, **kw):
    "Seeded learner on fresh DataLoaders (each DataLoader shuffles with its own generator, seeded from `random`)."
    set_seed(0)
    learn = make_learner(make_dls(data, cfg, seed=0), cfg=cfg, **kw)
    learn.remove_cb(ProgressCallback)
    return learn


class InterruptAt(Callback):
    "Raise KeyboardInterrupt (as Ctrl-C does) after `n` completed epochs, or in batch 1 of the epoch after them."
    order = 99 # after the checkpoint of the epoch is written
    def __init__(self, n, mid_epoch=False): self.n, self.mid, self.seen = n, mid_epoch, 0
    def after_epoch(self):
        self.seen += 1
        if self.seen == self.n and not self.mid: raise KeyboardInterrupt
    def after_batch(self):
        if self.mid and self.training and self.seen == self.n and self.iter == 1: raise KeyboardInterrupt


def fit(learn, folder=None, interrupt=None, **kw):
    "`fit_strategy` quietly; with `interrupt`, expect the KeyboardInterrupt it raises."
    kw = dict(dict(strategy='fine_tune', epochs=2, freeze_epochs=1), **kw)
    cbs = [] if interrupt is None else [interrupt]
    with learn.no_logging(), learn.added_cbs(cbs):
        if interrupt is None: return fit_strategy(learn, checkpoint=folder, **kw)
        with pytest.raises(KeyboardInterrupt): fit_strategy(learn, checkpoint=folder, **kw)


def resume(learn, folder, **kw):
    with learn.no_logging(): return fit_strategy(learn, kw.pop('strategy', 'fine_tune'), resume=folder, **kw)


def weights(learn): return {k: v.clone() for k, v in learn.model.state_dict().items()}


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f'{len(differ)} tensors differ, e.g. {differ[:3]}'


@pytest.fixture(scope='module')
def run_a(data, cfg, tmp_path_factory):
    "(a) The uninterrupted reference: fine_tune 1 + 2 epochs, checkpointing every epoch."
    folder = tmp_path_factory.mktemp('a')/'ckpt'
    learn = learner(data, cfg)
    result = fit(learn, folder)
    return dict(folder=folder, learn=learn, result=result, weights=weights(learn), history=learn.history.epochs)


def test_full_run_checkpoint(run_a):
    meta = read_checkpoint(run_a['folder'])
    assert (meta['epochs_done'], meta['epochs_planned'], meta['finished'], meta['strategy']) == (3, 3, True, 'fine_tune')
    assert [p['epochs'] for p in meta['plan']] == [1, 2] and run_a['result'].resumed_from is None
    assert len(meta['history']['epochs']) == 3
    assert_same_weights(run_a['weights'], {k[6:]: v for k, v in strategies._read_tensors(run_a['folder']).items()
                                           if k.startswith('model.')})


def test_no_pickle(run_a):
    "(f) Only safetensors and JSON, both readable without unpickling; the module never pickles."
    folder = run_a['folder']
    assert sorted(p.name for p in folder.iterdir()) == sorted(CHECKPOINT_FILES)
    json.loads((folder/'checkpoint.json').read_text())
    with safe_open(str(folder/'checkpoint.safetensors'), 'pt') as f:
        keys = list(f.keys())
    assert 'rng.torch' in keys and any(k.startswith('opt.') for k in keys) and any(k.startswith('model.') for k in keys)
    source = Path(strategies.__file__).read_text()
    assert not any(s in source for s in ('torch.save', 'torch.load', 'import pickle', 'learn.save', 'learn.load'))


def test_resume_in_unfrozen_phase(run_a, data, cfg, tmp_path):
    "(b) Interrupted after epoch 2 (one epoch into the unfrozen phase), resumed: bitwise the weights of run A."
    folder = tmp_path/'b'
    fit(learner(data, cfg), folder, InterruptAt(2))
    meta = read_checkpoint(folder)
    assert (meta['epochs_done'], meta['phase'], meta['phase_epochs_done'], meta['finished']) == (2, 1, 1, False)
    learn = learner(data, cfg)
    r = resume(learn, folder)
    assert_same_weights(run_a['weights'], weights(learn))
    a = run_a['result']
    assert (r.accuracy, r.valid_loss, r.epochs, r.lrs, r.phases) == (a.accuracy, a.valid_loss, 3, a.lrs, a.phases)
    assert r.resumed_from == 2
    h, ha = learn.history.epochs, run_a['history']
    assert list(h.epoch) == [0, 1, 2] and list(h.fit) == list(ha.fit) and list(h.phase) == list(ha.phase)
    assert list(h.train_loss) == list(ha.train_loss) and list(h.fit_epoch) == list(ha.fit_epoch)
    assert list(learn.history.batches.step) == list(run_a['learn'].history.batches.step)
    assert len(learn.recorder.values) == 1 # the resumed fit's table: its one trained epoch, no empty row for the skipped one
    assert read_checkpoint(folder)['finished'] and read_checkpoint(folder)['resumed_from'] == 2


def test_resume_at_phase_boundary(run_a, data, cfg, tmp_path):
    "(c) Interrupted after the frozen phase's only epoch: the checkpoint points at the start of the next phase."
    folder = tmp_path/'c'
    fit(learner(data, cfg), folder, InterruptAt(1))
    assert (read_checkpoint(folder)['phase'], read_checkpoint(folder)['phase_epochs_done']) == (1, 0)
    learn = learner(data, cfg)
    assert resume(learn, folder).resumed_from == 1
    assert_same_weights(run_a['weights'], weights(learn))


def test_resume_in_frozen_phase(data, cfg, tmp_path):
    "(c) fine_tune 2 + 1, interrupted one epoch into the frozen phase and resumed: equal to the uninterrupted run."
    reference = learner(data, cfg)
    a = fit(reference, epochs=1, freeze_epochs=2)
    fit(learner(data, cfg), tmp_path/'f', InterruptAt(1), epochs=1, freeze_epochs=2)
    meta = read_checkpoint(tmp_path/'f')
    assert (meta['phase'], meta['phase_epochs_done'], meta['frozen_idx']) == (0, 1, meta['n_groups'] - 1)
    learn = learner(data, cfg)
    r = resume(learn, tmp_path/'f')
    assert_same_weights(weights(reference), weights(learn))
    assert (r.accuracy, r.valid_loss, r.resumed_from) == (a.accuracy, a.valid_loss, 1)


def test_resume_gradual_validate_once(data, cfg, tmp_path):
    "Several phases, validating only after the last epoch, interrupted mid-epoch: the epoch in progress is redone."
    kw = dict(strategy='gradual', epochs=3, freeze_epochs=1, validate_each_epoch=False)
    reference = learner(data, cfg)
    a = fit(reference, **kw)
    fit(learner(data, cfg), tmp_path/'g', InterruptAt(2, mid_epoch=True), **kw)
    assert read_checkpoint(tmp_path/'g')['epochs_done'] == 2 # the interrupted third epoch left the second's checkpoint
    learn = learner(data, cfg)
    r = resume(learn, tmp_path/'g', strategy='gradual')
    assert_same_weights(weights(reference), weights(learn))
    assert (r.accuracy, r.valid_loss, r.lrs, r.epochs) == (a.accuracy, a.valid_loss, a.lrs, 4)
    assert learn.history.epochs.valid_loss.notna().sum() == 1 # still one validation, after the last epoch


def test_extra_epochs(run_a, data, cfg, tmp_path):
    "(d) A finished run resumed with extra_epochs trains one more phase at the last phase's rates."
    folder = tmp_path/'d'
    shutil.copytree(run_a['folder'], folder)
    learn = learner(data, cfg)
    r = resume(learn, folder, extra_epochs=2)
    assert (r.epochs, r.resumed_from) == (5, 3)
    assert len(learn.history.epochs) == 5 and list(learn.history.epochs.fit) == [0, 1, 1, 2, 2]
    meta = read_checkpoint(folder)
    assert (meta['epochs_done'], meta['epochs_planned'], meta['finished']) == (5, 5, True)
    assert meta['plan'][-1] == dict(read_checkpoint(run_a['folder'])['plan'][-1], epochs=2)
    learn2 = learner(data, cfg)
    again = resume(learn2, folder) # finished, nothing more asked: no training, the recorded result
    assert (again.epochs, again.accuracy, again.valid_loss) == (5, r.accuracy, r.valid_loss)
    assert_same_weights(weights(learn), weights(learn2))
    with pytest.raises(ValueError, match='resume='): fit_strategy(learner(data, cfg), extra_epochs=1)
    with pytest.raises(ValueError, match='0 or more'): fit_strategy(learner(data, cfg), resume=folder, extra_epochs=-1)


def one_line_error(folder, learn, strategy='fine_tune', match=''):
    with pytest.raises(CheckpointError, match=match) as e: fit_strategy(learn, strategy, resume=folder)
    assert '\n' not in str(e.value) and isinstance(e.value, ValueError)
    return str(e.value)


def edited(src, dst, **changes):
    shutil.copytree(src, dst)
    meta = json.loads((dst/'checkpoint.json').read_text())
    meta.update(changes)
    (dst/'checkpoint.json').write_text(json.dumps(meta))
    return dst


def test_bad_checkpoints(run_a, data, cfg, tmp_path):
    "(e) Missing, partial, invalid, newer or mismatched checkpoints: one-line CheckpointError, before any training."
    learn, src = learner(data, cfg), run_a['folder']
    before = weights(learn)
    one_line_error(tmp_path/'none', learn, match='no checkpoint folder')
    (tmp_path/'empty').mkdir()
    one_line_error(tmp_path/'empty', learn, match='incomplete')
    half = tmp_path/'half'
    shutil.copytree(src, half)
    (half/'checkpoint.json').unlink()
    one_line_error(half, learn, match='checkpoint.json missing')
    cut = tmp_path/'cut'
    shutil.copytree(src, cut)
    data_bytes = (cut/'checkpoint.safetensors').read_bytes()
    (cut/'checkpoint.safetensors').write_bytes(data_bytes[:len(data_bytes)//2])
    one_line_error(cut, learn, match='does not match')
    bad_json = tmp_path/'json'
    shutil.copytree(src, bad_json)
    (bad_json/'checkpoint.json').write_text('{"format": ')
    one_line_error(bad_json, learn, match='not valid JSON')
    one_line_error(edited(src, tmp_path/'v', version=99), learn, match='upgrade')
    one_line_error(edited(src, tmp_path/'fmt', format='x'), learn, match='not a finetune-course checkpoint')
    one_line_error(edited(src, tmp_path/'keys', optimizer=None), learn, match='optimizer')
    one_line_error(edited(src, tmp_path/'pos', phase=0), learn, match='plan and position')
    one_line_error(src, learn, 'gradual', match="strategy='fine_tune'")
    one_line_error(edited(src, tmp_path/'arch', arch='resnet18'), learn, match='arch')
    msg = one_line_error(edited(src, tmp_path/'cls', classes=[f'c\n{i}' for i in range(20)]), learn, match='classes')
    assert 'and 12 more' in msg and '\\n' in msg
    assert_same_weights(before, weights(learn))


def test_sigint_during_save_is_held(run_a, monkeypatch, tmp_path):
    "A Ctrl-C while the checkpoint is written arrives after both files are in place: the checkpoint stays whole."
    if threading.current_thread() is not threading.main_thread(): pytest.skip('signals need the main thread')
    learn = run_a['learn']
    run = _Run('fine_tune', strategy_plan(learn, 'fine_tune', epochs=2, freeze_epochs=1), phase=2)
    tensors, meta = _checkpoint_content(learn, run, [], 1.)
    real = strategies.save_file
    def interrupted_save(*args, **kwargs):
        signal.raise_signal(signal.SIGINT)
        return real(*args, **kwargs)
    monkeypatch.setattr(strategies, 'save_file', interrupted_save)
    prev = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt): _save_checkpoint(tmp_path/'s', tensors, meta)
    finally: signal.signal(signal.SIGINT, prev)
    assert read_checkpoint(tmp_path/'s')['epochs_done'] == 3
    assert sorted(p.name for p in (tmp_path/'s').iterdir()) == sorted(CHECKPOINT_FILES) # no temporary file left
