#!/usr/bin/env python3
"""`make outputs`: run the home page and every lesson in place, in the quick profile on CPU, the way `make test` runs
them (nbdev's cell filter, execnb's shell, `IN_TEST=1`), and save what they show: figures as PNG at the figure's own
(modest) dpi, tables, printed numbers. Saved outputs carry no warnings (stderr), no progress bars and no path of the
machine that ran them. Each notebook records a hash of its code cells in `metadata.ftc_outputs` (a key nbdev-clean
keeps: `allowed_metadata_keys` in pyproject.toml; `metadata.nbdev` would be read as directives), so
`tests/test_outputs.py` can tell when a code cell changed after its outputs were saved.

Usage: python tools/save_outputs.py [--only 08_overfitting ...] [--jobs 2]
       python tools/save_outputs.py --check        (exit 1 and name the notebooks whose outputs are stale)"""
import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NBS = ROOT/'nbs'
SKIP_FLAGS = ['notest', 'slow', 'cuda', 'net'] # as tests/test_notebooks.py: what the quick profile on a CPU skips
MAX_NOTEBOOK_BYTES = 1_000_000
MAX_NBS_BYTES = 12_000_000
# slowest first, so two workers finish together (quiet pytest -n 2 seconds, benchmarks/results/lesson_times.json)
ORDER = ['01_', '12_', '03_', '10_', '08_', '06_', '04_', '05_', '09_', '07_', '11_', '00_', '02_']


def notebooks() -> list:
    "The notebooks whose outputs are saved: the home page and every lesson."
    return [NBS/'index.ipynb', *sorted((NBS/'lessons').glob('[0-9]*.ipynb'))]


def code_hash(nb:dict) -> str:
    "A short hash of the notebook's code cells, in order: it changes when any code cell does."
    code = '\0'.join(''.join(c['source']).rstrip() for c in nb['cells'] if c['cell_type'] == 'code')
    return hashlib.sha256(code.encode()).hexdigest()[:16]


def stale(path:Path) -> str|None:
    "None when the saved outputs match the code cells, else one line that says what to run."
    nb = json.loads(Path(path).read_text())
    saved = nb.get('metadata', {}).get('ftc_outputs', {}).get('code_hash')
    if saved == code_hash(nb): return None
    why = 'has no saved outputs' if saved is None else 'has code cells changed since its outputs were saved'
    return f'{Path(path).name} {why}: run `make outputs ONLY={Path(path).stem}` (or `make outputs` for all)'


def _path_patterns() -> list:
    "(pattern, replacement) for paths of this machine: the checkout, the cache, temporary folders, the home folder."
    home = os.environ.get('FTC_HOME')
    pairs = [(str(ROOT), '.'), *([(home, '$FTC_HOME')] if home else []),
             (tempfile.gettempdir().rstrip('/') + '/', '$TMPDIR/'), (str(Path.home()), '~')]
    return [(re.compile(re.escape(p)), r) for p, r in sorted(pairs, key=lambda pr: -len(pr[0])) if p and p != '/']


def _clean_text(text, patterns):
    "Machine paths replaced by placeholders."
    if isinstance(text, list): text = ''.join(text)
    for pattern, repl in patterns: text = pattern.sub(repl, text)
    return text


PROGRESS_BAR = re.compile(r'\|[█\-]*\|\s*\d+(?:\.\d+)?%') # fastprogress's console bar: |███-----| 37.50% [3/8 ...]


def _unbar(text:str) -> str:
    "Text as a terminal would leave it (the last segment after each carriage return), without progress bars."
    out = []
    for line in text.split('\n'):
        segments = [s for s in line.split('\r') if s.strip() not in ('', '█') and not PROGRESS_BAR.search(s)]
        if segments: out.append(segments[-1])
        elif '\r' not in line and line.strip() != '█' and not PROGRESS_BAR.search(line): out.append(line)
    return '\n'.join(out)


def _keep(out:dict) -> bool:
    "Warnings (stderr) and progress bars are not saved."
    if out.get('output_type') == 'stream': return out.get('name') != 'stderr'
    html = ''.join(out.get('data', {}).get('text/html', ''))
    return '<progress' not in html


def shrink_png(b64:str) -> str:
    "The smaller of the PNG re-encoded losslessly and quantized to 256 colours on white (plots lose nothing visible)."
    import base64
    import io
    from PIL import Image
    raw = base64.b64decode(b64)
    img = Image.open(io.BytesIO(raw))
    flat = Image.alpha_composite(Image.new('RGBA', img.size, 'white'), img.convert('RGBA')).convert('RGB')
    best = raw
    for candidate in (flat, flat.quantize(256, method=Image.Quantize.MEDIANCUT)):
        buf = io.BytesIO(); candidate.save(buf, 'PNG', optimize=True)
        if len(buf.getvalue()) < len(best): best = buf.getvalue()
    return base64.b64encode(best).decode() + '\n'


def sanitize(nb:dict) -> dict:
    "Drop warnings and progress bars, replace machine paths, shrink figures, record the code hash."
    patterns = _path_patterns()
    for cell in nb['cells']:
        if cell['cell_type'] != 'code': continue
        outs = [o for o in cell.get('outputs', []) if _keep(o)]
        for o in outs:
            if 'text' in o: o['text'] = _unbar(_clean_text(o['text'], patterns))
            for mime, val in o.get('data', {}).items():
                if mime.startswith('text/'):
                    o['data'][mime] = _clean_text(val, patterns)
                if mime == 'image/png':
                    o['data'][mime] = shrink_png(''.join(val))
            o.get('metadata', {}).pop('execution', None)
        cell['outputs'] = [o for o in outs if o.get('output_type') != 'stream' or o['text'].strip()]
        cell.get('metadata', {}).pop('execution', None)
    nb.setdefault('metadata', {})['ftc_outputs'] = dict(code_hash=code_hash(nb), profile='quick', device='cpu')
    return nb


def run_one(path:Path) -> None:
    "Execute `path` in place (in this process) as `make test` does, then save its sanitized outputs."
    os.environ['IN_TEST'] = '1'
    from fastcore.nbio import write_nb
    from execnb.shell import CaptureShell
    from fastcore.xtras import working_directory
    from nbdev.process import NBProcessor
    from nbdev.test import _skip_cell
    sys.path.insert(0, str(ROOT))
    nb = NBProcessor(path, rm_directives=False, process=True).nb
    shell = CaptureShell(path, mpl_format='png') # plain PNG at the figure's dpi, not retina (4x the bytes)
    with working_directory(path.parent):
        shell.run_all(nb, exc_stop=True, preproc=_skip_cell(nb, SKIP_FLAGS, []), cell_timeout=600)
    write_nb(nb, path)
    path.write_text(json.dumps(sanitize(json.loads(path.read_text())), indent=1, ensure_ascii=False) + '\n')
    subprocess.run([str(Path(sys.executable).parent/'nbdev-clean'), '--fname', str(path)], check=True, cwd=ROOT)


def _run_in_child(path:Path) -> tuple:
    "Run one notebook in a fresh process with one math thread (two at once on two cores)."
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1', 'MPLBACKEND': 'Agg', 'HF_HUB_OFFLINE': '1'}
    env.setdefault('FTC_HOME', str(ROOT/'.cache'/'ftc'))
    start = time.time()
    res = subprocess.run([sys.executable, __file__, '--one', str(path)], env=env, capture_output=True, text=True)
    return path, res.returncode, time.time() - start, (res.stderr or res.stdout)[-4000:]


def sizes() -> list:
    "Problems with sizes: a notebook over 1 MB, or nbs/ over 12 MB."
    out = [f'{p.relative_to(ROOT)} is {p.stat().st_size/1e6:.2f} MB (at most {MAX_NOTEBOOK_BYTES/1e6:.0f} MB): '
           'lower the dpi or the number of figures' for p in notebooks() if p.stat().st_size > MAX_NOTEBOOK_BYTES]
    total = sum(p.stat().st_size for p in NBS.rglob('*') if p.is_file())
    if total > MAX_NBS_BYTES: out.append(f'nbs/ is {total/1e6:.1f} MB (at most {MAX_NBS_BYTES/1e6:.0f} MB)')
    return out


def _order(paths):
    "Slowest lessons first."
    rank = lambda p: next((i for i, pre in enumerate(ORDER) if p.name.startswith(pre)), len(ORDER))
    return sorted(paths, key=rank)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--only', nargs='*', default=[], help='notebook stems or prefixes, e.g. 08_overfitting or 08')
    ap.add_argument('--jobs', type=int, default=2)
    ap.add_argument('--check', action='store_true', help='only report notebooks whose saved outputs are stale')
    ap.add_argument('--one', help=argparse.SUPPRESS)
    ap.add_argument('--resanitize', action='store_true', help=argparse.SUPPRESS) # re-clean saved outputs after a change here
    a = ap.parse_args(argv)
    if a.one: run_one(Path(a.one)); return 0
    if a.resanitize:
        for p in notebooks(): p.write_text(json.dumps(sanitize(json.loads(p.read_text())), indent=1, ensure_ascii=False) + '\n')
        subprocess.run([str(Path(sys.executable).parent/'nbdev-clean')], check=True, cwd=ROOT)
        return 0
    if a.check:
        problems = [m for m in map(stale, notebooks()) if m] + sizes()
        print('\n'.join(problems) or 'saved outputs are up to date')
        return 1 if problems else 0
    paths = [p for p in notebooks() if not a.only or any(p.stem.startswith(o) for o in a.only)]
    if not paths: print(f'no notebook matches {a.only}'); return 2
    start, failed = time.time(), []
    with ThreadPoolExecutor(a.jobs) as pool:
        for path, rc, seconds, err in pool.map(_run_in_child, _order(paths)):
            print(f'{"saved" if rc == 0 else "FAILED"} {path.relative_to(ROOT)} in {seconds:.0f} s', flush=True)
            if rc: failed.append(path); print(err)
    problems = sizes()
    print('\n'.join(problems))
    total = sum(p.stat().st_size for p in notebooks())
    print(f'==> {len(paths) - len(failed)} of {len(paths)} notebooks saved with outputs in {time.time() - start:.0f} s '
          f'({total/1e6:.1f} MB for the home page and lessons)')
    return 1 if failed or problems else 0


if __name__ == '__main__': sys.exit(main())
