#!/usr/bin/env python3
"""Build the docs site offline, without Quarto, from the outputs saved in the notebooks (nothing is executed).

Pages: the home page (nbs/index.ipynb), every lesson (nbs/lessons/) and a reference page per library notebook
(nbs/api/), whose `show_doc` cells are documented from the installed package. The notebooks are staged
into a temporary folder (tools/docs/stage.py: directives applied, hidden and exported cells dropped), then
Sphinx with myst-nb and the furo theme writes static HTML (tools/docs/conf.py; math as MathML, no MathJax,
no network). Warnings are errors: a notebook that cannot become a page fails the build, naming the notebook.
With Quarto installed, `nbdev-docs` builds nbdev's own site from the same notebooks.

Usage: build_docs.py [--nbs DIR] [--out DIR] [--only REGEX]"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT/'tools'/'docs'
sys.path.insert(0, str(DOCS))


def _size(folder: Path) -> int: return sum(f.stat().st_size for f in folder.rglob('*') if f.is_file())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--nbs', default=str(ROOT/'nbs'), help='notebooks folder (default: nbs/)')
    ap.add_argument('--out', default=str(ROOT/'_site'), help='site folder, replaced (default: _site/)')
    ap.add_argument('--only', default='', help='regex on lessons/NN_x.ipynb, api/NN_x.ipynb: build only those (and the home page)')
    args = ap.parse_args(argv)
    start = time.time()
    nbs, out = Path(args.nbs).resolve(), Path(args.out).resolve()
    if not nbs.is_dir(): print(f'docs: notebooks folder not found: {nbs}', file=sys.stderr); return 2
    if out in (nbs, ROOT) or nbs in out.parents or out in nbs.parents or out in ROOT.parents or (ROOT/'nbs') in [out, *out.parents]:
        print(f'docs: refusing to write the site into {out} (it would replace notebooks)', file=sys.stderr); return 2
    if out != ROOT/'_site' and out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out/'searchindex.js').exists())):
        print(f'docs: {out} exists and is not a site built here: remove it or pass another --out', file=sys.stderr); return 2
    lib_name = tomllib.loads((ROOT/'pyproject.toml').read_text())['tool']['nbdev']['lib_name']
    os.environ.setdefault('MPLBACKEND', 'Agg')
    from stage import StageError, stage
    with tempfile.TemporaryDirectory(prefix='ftc-docs-') as tmp:
        src = Path(tmp)/'src'
        try: pages = stage(nbs, src, lib_name, args.only)
        except StageError as e: print(f'docs: FAILED: {e}', file=sys.stderr); return 1
        build = Path(tmp)/'html'
        cmd = [sys.executable, '-m', 'sphinx', '-b', 'html', '-W', '--keep-going', '-q', '-j', '1', '-c', str(DOCS),
               '-d', str(Path(tmp)/'doctrees'), str(src), str(build)]
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp)
        msg = res.stderr + res.stdout
        for orig, staged in pages: # name the notebooks, not their staged copies
            msg = msg.replace(str(staged), str(orig)).replace(str(staged.with_suffix('')), str(orig))
        if res.returncode:
            print(msg.rstrip(), file=sys.stderr)
            print(f'docs: FAILED: sphinx-build exited {res.returncode} (warnings are errors; see above)', file=sys.stderr)
            return 1
        if msg.strip(): print(msg.rstrip())
        for junk in ('.buildinfo', '.doctrees', '_sources'): shutil.rmtree(build/junk, ignore_errors=True); (build/junk).unlink(missing_ok=True)
        if out.exists(): shutil.rmtree(out)
        shutil.copytree(build, out)
    n = sum(1 for f in out.rglob('*.html') if f.name not in ('genindex.html', 'search.html'))
    shown = os.path.relpath(out) if out.is_relative_to(Path.cwd()) else str(out)
    print(f'wrote {n} pages to {shown}/ ({_size(out)/1e6:.1f} MB) in {time.time()-start:.0f} s; open {shown}/index.html')
    return 0


if __name__ == '__main__': sys.exit(main())
