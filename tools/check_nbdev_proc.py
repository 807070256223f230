#!/usr/bin/env python3
"""Run nbdev's own docs processing (what `nbdev-proc-nbs` and `nbdev-docs` do for people who have Quarto) on each
notebook alone, from the repository root as nbdev runs it, and name every notebook and cell that fails. nbdev executes
every cell that holds an import or `show_doc`: such a cell must not need a GPU nor a name that a skipped cell defines
(keep imports in cells of their own). Usage: python tools/check_nbdev_proc.py [NOTEBOOK ...]"""
import os
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv) -> int:
    warnings.filterwarnings('ignore')
    os.environ['IN_TEST'] = '1' # as nbdev's own driver sets it
    os.chdir(ROOT)
    from fastcore.nbio import read_nb
    from nbdev.processors import FilterDefaults
    paths = [Path(p) for p in argv] or [ROOT/'nbs'/'index.ipynb', *sorted((ROOT/'nbs').glob('*/[0-9]*.ipynb'))]
    failed = 0
    for path in paths:
        try:
            FilterDefaults().nb_proc(read_nb(path)).process()
        except Exception as e:
            failed += 1
            lines = str(e).splitlines() or [type(e).__name__]
            print(f'nbdev processing FAILED: {path.relative_to(ROOT) if path.is_absolute() else path}: {lines[0]} {lines[-1]}')
    print(f'nbdev processing: {len(paths) - failed} of {len(paths)} notebooks ok')
    return 1 if failed else 0


if __name__ == '__main__': sys.exit(main(sys.argv[1:]))
