"Shared pytest setup: offline, quick profile, a private cache so tests never touch the user's."
import os
from pathlib import Path

os.environ.setdefault('FTC_HOME', str(Path(__file__).resolve().parent.parent/'.cache'/'ftc'))
os.environ.setdefault('MPLBACKEND', 'Agg')
os.environ.setdefault('HF_HUB_OFFLINE', '1')

# pytest-xdist runs one worker per core: give each worker one math thread. Two workers with torch's
# default threads each oversubscribe a 2-core machine, which made single runs here 10-40x slower.
if os.environ.get('PYTEST_XDIST_WORKER'):
    for var in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OPENBLAS_NUM_THREADS'): os.environ.setdefault(var, '1')
    import torch
    torch.set_num_threads(1)
