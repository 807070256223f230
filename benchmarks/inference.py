#!/usr/bin/env python3
"""Inference speed on the CPU, PyTorch eager against onnxruntime, for the default model (tf_efficientnet_lite0 with
fastai's head, 10 classes) at 64 and 224 px: latency per image at batch 1 (median of N calls after warm-up) and
throughput at batch 64 (images/s, median of a few calls). Both get the same number of threads (OMP_NUM_THREADS, 1
when unset), so the numbers compare the runtimes, not the thread pools. The model folder is written by hand with
random weights (the weights do not change the timing) and exported with `inference.export_onnx`, which also checks
that onnxruntime agrees with PyTorch. Measures and records; asserts no time.
Writes benchmarks/results/inference.json. Usage: OMP_NUM_THREADS=1 python benchmarks/inference.py [calls]"""
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault('OMP_NUM_THREADS', '1')
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result

THREADS = int(os.environ['OMP_NUM_THREADS'])
SIZES = (64, 224)
BIG_BATCH = 64


def model_folder(dest:Path, size:int) -> Path:
    "A model folder as `save_model` writes it: the default backbone and head, random weights, `size` px input."
    import torch
    from safetensors.torch import save_file
    from finetune_course.inference import HEAD_DEFAULTS, build_network, validate_meta
    meta = dict(format='finetune-course', format_version=1, arch='tf_efficientnet_lite0', source='timm', n_out=10,
                classes=[str(i) for i in range(10)], mean=[0.5]*3, std=[0.5]*3, size=[size, size],
                resize=dict(kind='Resize', method='crop', pad_mode='reflection'), head=dict(HEAD_DEFAULTS), n_in=3)
    torch.manual_seed(0)
    net = build_network(validate_meta(meta))
    dest.mkdir(parents=True)
    save_file(net.state_dict(), str(dest/'model.safetensors'))
    (dest/'model.json').write_text(json.dumps(meta))
    return dest


def timed(f, calls:int) -> float:
    "Median seconds of `calls` calls of `f`, after two warm-up calls."
    for _ in range(2): f()
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def measure(size:int, calls:int, tmp:Path) -> list:
    "Rows (engine, size, latency at batch 1 in ms, throughput at batch 64 in images/s) for one input size."
    import onnxruntime as ort
    import torch
    from finetune_course.inference import export_onnx, load_model, read_meta
    d = model_folder(tmp/f'model-{size}', size)
    f = export_onnx(d)
    model, _ = load_model(d)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = THREADS, 1
    sess = ort.InferenceSession(str(f), opts, providers=['CPUExecutionProvider'])
    x1, xb = torch.randn(1, 3, size, size), torch.randn(BIG_BATCH, 3, size, size)

    def eager(x):
        with torch.inference_mode(): return model(x)
    runs = dict(torch=eager, onnxruntime=lambda x: sess.run(None, {'image': x.numpy()}))
    rows = []
    for engine, run in runs.items():
        one = timed(lambda: run(x1), calls)
        big = timed(lambda: run(xb), max(3, calls // 5))
        rows.append(dict(engine=engine, size=size, latency_ms_batch1=round(one*1000, 2),
                         throughput_batch64=round(BIG_BATCH/big, 1)))
        print(rows[-1], flush=True)
    rows.append(dict(engine='check', size=size, max_abs_diff=read_meta(d)['export']['onnx']['max_abs_diff'],
                     onnx_mb=round(f.stat().st_size/2**20, 1)))
    return rows


def main(calls:int=20):
    import onnxruntime as ort
    import torch
    torch.set_num_threads(THREADS)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [r for size in SIZES for r in measure(size, calls, Path(tmp))]
    times = [r for r in rows if r['engine'] != 'check']
    speedup = {f"{s}px": dict(batch1=round(t['latency_ms_batch1']/o['latency_ms_batch1'], 2),
                              batch64=round(o['throughput_batch64']/t['throughput_batch64'], 2))
               for s in SIZES for t in times if t['size'] == s and t['engine'] == 'torch'
               for o in times if o['size'] == s and o['engine'] == 'onnxruntime'}
    write_result('inference', dict(
        model='tf_efficientnet_lite0 + fastai head, 10 classes, random weights', threads=THREADS, calls_batch1=calls,
        batch=BIG_BATCH, versions=dict(torch=torch.__version__, onnxruntime=ort.__version__), rows=rows,
        onnxruntime_speedup=speedup,
        note='latency: median ms per call at batch 1; throughput: images/s at batch 64 (median call); '
             'speedup > 1 means onnxruntime is faster; the check rows are export_onnx max |p_onnx - p_torch|'))


if __name__ == '__main__':
    main(*(int(a) for a in sys.argv[1:2]))
