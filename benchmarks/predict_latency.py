#!/usr/bin/env python3
"""Start-up cost of `finetune-course predict RUN IMAGE`: wall time from start to exit of the whole command, against a
bare `python -c 'import torch, timm'`, measured in alternating pairs (warm-up pair first, then N pairs) so that load
on the machine hits both alike. Records the medians, the ratio of the medians, the median of the paired ratios and
whether the predict process imported fastai. Measures and records; asserts no time (the target is a ratio <= 1.3).
Writes benchmarks/results/predict_latency.json. Usage: python benchmarks/predict_latency.py [pairs]"""
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result

ROOT = Path(__file__).resolve().parent.parent
IMAGE = ROOT/'data'/'shapes-mini'/'circle'/'circle_0000.png'
BASELINE = [sys.executable, '-c', 'import torch, timm']
FASTAI_CHECK = ("import sys; from finetune_course.cli import main; rc = main(['predict', sys.argv[1], sys.argv[2]]); "
                "print('FASTAI', any(m.split('.')[0] == 'fastai' for m in sys.modules))")


def predict_command(run:Path, image:Path) -> list:
    "The installed `finetune-course` script next to this Python, else `python -m finetune_course.cli`."
    script = Path(sys.executable).parent/'finetune-course'
    head = [str(script)] if script.exists() else [sys.executable, '-m', 'finetune_course.cli']
    return head + ['predict', str(run), str(image)]


def saved_run(dest:Path) -> Path:
    "A model folder as `fit` writes it (bundled body, untrained head: the weights do not change the timing)."
    from finetune_course.config import get_config
    from finetune_course.data import make_dls
    from finetune_course.models import make_learner, save_model
    dls = make_dls(ROOT/'data'/'shapes-mini', get_config('quick', 'cpu'))
    return save_model(make_learner(dls), dest)


def wall(cmd:list, env:dict) -> float:
    "Seconds from start to exit of `cmd`; fails if it fails."
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    return time.perf_counter() - t0


def imports_fastai(run:Path, env:dict) -> bool:
    "Does the predict command's process end with a fastai module loaded?"
    out = subprocess.run([sys.executable, '-c', FASTAI_CHECK, str(run), str(IMAGE)], check=True, capture_output=True,
                         text=True, env=env).stdout
    return 'FASTAI True' in out


def paired(cmd:list, env:dict, pairs:int) -> tuple:
    "(predict seconds, baseline seconds), `pairs` alternating runs each after one warm-up pair, the order swapped each pair."
    wall(cmd, env)
    wall(BASELINE, env)
    ours, base = [], []
    for i in range(pairs):
        if i % 2: base.append(wall(BASELINE, env))
        ours.append(wall(cmd, env))
        if not i % 2: base.append(wall(BASELINE, env))
        print(f'pair {i}: predict {ours[-1]:.2f} s, import torch+timm {base[-1]:.2f} s', flush=True)
    return ours, base


def main(pairs:int=7):
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get('OMP_NUM_THREADS', '1'), PYTHONWARNINGS='ignore')
    with tempfile.TemporaryDirectory() as tmp:
        run = saved_run(Path(tmp)/'run')
        cmd = predict_command(run, IMAGE)
        fastai = imports_fastai(run, env)
        ours, base = paired(cmd, env, pairs)
    med_ours, med_base = statistics.median(ours), statistics.median(base)
    result = dict(command='finetune-course predict RUN IMAGE', baseline="python -c 'import torch, timm'", pairs=pairs,
                  predict_s=[round(s, 3) for s in ours], baseline_s=[round(s, 3) for s in base],
                  median_predict_s=round(med_ours, 3), median_baseline_s=round(med_base, 3),
                  ratio_of_medians=round(med_ours/med_base, 3),
                  median_paired_ratio=round(statistics.median(a/b for a, b in zip(ours, base)), 3),
                  target_ratio=1.3, predict_imports_fastai=fastai,
                  before=dict(median_predict_s=5.1, median_baseline_s=3.1, ratio=1.67, source='issue 9 (fastai on the path)'))
    print({k: result[k] for k in ('median_predict_s', 'median_baseline_s', 'ratio_of_medians', 'predict_imports_fastai')})
    write_result('predict_latency', result)


if __name__ == '__main__':
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 7)
