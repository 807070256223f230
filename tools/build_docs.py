#!/usr/bin/env python3
"""Build HTML pages of the lessons without Quarto, into _site/.

With Quarto installed, `nbdev-docs` builds the real site from the same notebooks. Here: nbdev's
processing (`nbdev-proc-nbs`: directives, hidden cells, show_doc) into _proc/, then nbconvert to HTML.
Outputs are not executed: pages show the saved (empty) outputs unless --execute is given."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def clean_for_nbconvert(nb_path: Path):
    "Drop the cell keys nbdev adds that nbconvert's schema check rejects."
    nb = json.loads(nb_path.read_text())
    for cell in nb['cells']:
        cell.pop('has_sd', None)
        cell.get('metadata', {}).pop('execution', None)
    nb_path.write_text(json.dumps(nb, indent=1))


def main(argv):
    subprocess.run([str(BIN/'nbdev-proc-nbs')], cwd=ROOT, check=False, capture_output=True)
    proc = ROOT/'_proc'
    if not proc.exists(): print('nbdev-proc-nbs wrote nothing to _proc/'); return 1
    site = ROOT/'_site'; site.mkdir(exist_ok=True)
    nbs = sorted(proc.glob('*.ipynb'))
    for nb in nbs: clean_for_nbconvert(nb)
    args = [str(BIN/'jupyter'), 'nbconvert', '--to', 'html', '--output-dir', str(site), *map(str, nbs)]
    if '--execute' in argv: args.insert(3, '--execute')
    res = subprocess.run(args, cwd=proc, capture_output=True, text=True)
    if res.returncode: print(res.stderr[-3000:]); return res.returncode
    print(f'wrote {len(nbs)} pages to {site}')
    return 0


if __name__ == '__main__': sys.exit(main(sys.argv[1:]))
