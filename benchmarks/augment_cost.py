#!/usr/bin/env python3
"""What each augmentation preset costs: milliseconds per picture of the item stage (CPU, one picture at a
time, as a data-loader worker runs it) and of the batch stage (CPU, and the GPU when CUDA is present), at
64 and 128 px, on a 320x240 photo-like picture. Also the ratio of each preset to `none` in the same run.
Writes benchmarks/results/augment_cost.json. Measures and records; asserts no time.

Usage: python benchmarks/augment_cost.py [--sizes 64 128] [--n 64] [--reps 5]"""
import argparse
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
warnings.filterwarnings('ignore', category=FutureWarning)
import torch

from common import write_result
from finetune_course.augment import AUG_PRESETS, augment_cost # the package's config sets NO_ALBUMENTATIONS_UPDATE=1


def gpu_throughput(sizes, n, reps):
    "Batch-stage images per second on the GPU for each preset and size (the item stage stays on the CPU)."
    if not torch.cuda.is_available(): return None
    df = augment_cost(AUG_PRESETS, sizes, n=n, reps=reps, device='cuda')
    df['batch_imgs_per_s'] = 1000/df.batch_ms
    return df.round(4).to_dict('records')


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--sizes', type=int, nargs='+', default=[64, 128])
    ap.add_argument('--n', type=int, default=64, help='pictures per batch')
    ap.add_argument('--reps', type=int, default=5, help='timed repetitions per pipeline (fastest kept)')
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    cpu = augment_cost(AUG_PRESETS, args.sizes, n=args.n, reps=args.reps, device='cpu')
    base = cpu[cpu.preset == 'none'].set_index('size').total_ms
    cpu['x_none'] = cpu.total_ms / cpu['size'].map(base)
    cpu['cpu_imgs_per_s'] = 1000/cpu.total_ms
    print(cpu.round(3).to_string(index=False))
    gpu = gpu_throughput(args.sizes, max(args.n, 256), args.reps)
    if gpu: print('GPU batch stage:', *(f"{r['preset']}@{r['size']}: {r['batch_imgs_per_s']:.0f} img/s" for r in gpu), sep='\n  ')
    write_result('augment_cost', dict(
        unit='milliseconds per picture (fastest of reps); item stage on CPU one picture at a time, batch stage on the named device',
        source_picture='finetune_course.augment.sample_photo(): 320x240 RGB', n_per_batch=args.n, reps=args.reps,
        torch_threads=torch.get_num_threads(), cpu=cpu.round(4).to_dict('records'), gpu=gpu))
    return 0


if __name__ == '__main__': sys.exit(main())
