"Every lesson notebook is a test: it runs top to bottom in the quick profile and its assertions hold."
import os
from pathlib import Path

import pytest
from nbdev.test import test_nb as run_notebook

NBS = Path(__file__).resolve().parent.parent/'nbs'
# the home page (index), the course (lessons/) and the library reference (api/), one test each
NOTEBOOKS = sorted(p for sub in ('.', 'lessons', 'api') for p in (NBS/sub).glob('*.ipynb') if not p.name.startswith('_'))
# cells tagged `#| cuda` also run where a GPU is present; `#| net`, `#| slow`, `#| notest` never run here
FORCE = ['cuda'] if os.environ.get('FTC_TEST_CUDA') else []
SKIP = [f for f in ('notest', 'slow', 'cuda', 'net') if f not in FORCE]


@pytest.mark.parametrize('nb', NOTEBOOKS, ids=[f'{p.parent.name}/{p.stem}' for p in NOTEBOOKS])
def test_notebook(nb):
    ok, seconds = run_notebook(nb, skip_flags=SKIP, force_flags=FORCE, basepath=NBS.parent, cell_timeout=600)
    assert ok, f'{nb.name} failed after {seconds:.0f}s: see the traceback above'
