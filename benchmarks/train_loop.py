#!/usr/bin/env python3
"""Our training loop (fastai Learner from `make_learner`, with its callbacks) against a plain PyTorch loop
on the same model, data and batches, in the same run. Also fp32 vs mixed precision and channels_last
when a CUDA GPU is present. Writes benchmarks/results/train_loop.json."""
import os
import sys
import time
from itertools import islice
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch
import torch.nn.functional as F
from fastai.callback.core import Callback, CancelFitException

from common import write_result
from finetune_course.config import get_config, set_seed
from finetune_course.data import get_dataset, make_dls
from finetune_course.models import make_learner

N_BATCHES = int(os.environ.get('BENCH_BATCHES', 20))


def plain_loop(model, batches, device, lr=1e-3, amp_dtype=None):
    "A minimal PyTorch training loop over the same DataLoader's batches; returns images per second."
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    n, t0 = 0, None
    for i, (xb, yb) in enumerate(batches):
        if i == 1: # the first batch is warm-up
            t0, n = time.perf_counter(), 0
        with torch.autocast(device_type=device.split(':')[0], dtype=amp_dtype, enabled=amp_dtype is not None):
            loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        n += len(xb)
    if device.startswith('cuda'): torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def fastai_loop(learn, n_batches):
    "fastai's fit on `n_batches` training batches; returns images per second (after a warm-up batch)."
    class Timer(Callback):
        order = 100
        def before_fit(self): self.i, self.n, self.t0 = 0, 0, None
        def after_batch(self):
            if not self.training: return
            self.i += 1
            if self.i == 1:
                self.t0 = time.perf_counter()
                return
            self.n += self.xb[0].shape[0]
            if self.i > n_batches: raise CancelFitException()
    timer = Timer()
    with learn.no_logging(), learn.no_bar(): learn.fit(1, 1e-3, cbs=timer)
    if str(learn.dls.device).startswith('cuda'): torch.cuda.synchronize()
    return timer.n / (time.perf_counter() - timer.t0)


def main():
    cfg = get_config()
    set_seed(cfg.seed)
    dls = make_dls(get_dataset('digits'), cfg)
    rows = []
    settings = [('fp32', None, False)]
    if cfg.device.startswith('cuda'):
        settings += [('bf16' if cfg.precision == 'bf16' else 'fp16', torch.bfloat16 if cfg.precision == 'bf16' else torch.float16, False),
                     (f'{cfg.precision}+channels_last', torch.bfloat16 if cfg.precision == 'bf16' else torch.float16, True)]
    for name, amp_dtype, channels_last in settings:
        learn = make_learner(dls, cfg=cfg.replace(precision='fp32' if amp_dtype is None else cfg.precision))
        learn.unfreeze()
        if channels_last: learn.model.to(memory_format=torch.channels_last)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        batches = ((xb.as_subclass(torch.Tensor).contiguous(memory_format=fmt), yb.as_subclass(torch.Tensor))
                   for xb, yb in islice(learn.dls.train, N_BATCHES + 1))
        ours = fastai_loop(learn, N_BATCHES)
        plain = plain_loop(learn.model, batches, cfg.device, amp_dtype=amp_dtype)
        rows.append(dict(setting=name, fastai_img_per_s=round(ours, 1), plain_pytorch_img_per_s=round(plain, 1),
                         ratio_ours_over_plain=round(ours / plain, 3)))
        print(rows[-1], flush=True)
    write_result('train_loop', dict(image_size=cfg.size, bs=cfg.bs, n_batches=N_BATCHES, backbone='tf_efficientnet_lite0', rows=rows))


if __name__ == '__main__': main()
