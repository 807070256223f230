#!/usr/bin/env python3
"""Run every benchmark script in this folder; each writes benchmarks/results/<name>.json.

Benchmarks measure and record, they never assert a time. Usage: python benchmarks/run_all.py [name ...]"""
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(names):
    scripts = sorted(p for p in HERE.glob('*.py') if p.name not in ('run_all.py', 'common.py') and not p.name.startswith('_'))
    if names: scripts = [p for p in scripts if p.stem in names]
    failed = []
    for script in scripts:
        t0 = time.time()
        print(f'==> {script.name}', flush=True)
        rc = subprocess.call([sys.executable, str(script)])
        print(f'    {script.name}: exit {rc} after {time.time()-t0:.0f}s', flush=True)
        if rc: failed.append(script.name)
    if failed: print('failed:', ', '.join(failed)); return 1
    print(f'results in {HERE/"results"}'); return 0


if __name__ == '__main__': sys.exit(main(sys.argv[1:]))
