#!/usr/bin/env python3
"""Build HTML pages of the lessons and the library reference without Quarto, into _site/.

With Quarto installed, `nbdev-docs` builds the real site from the same notebooks. Here: nbdev's
processing (`nbdev-proc-nbs`: directives, hidden cells, show_doc) into _proc/ (index,
lessons/, api/), then nbconvert to HTML, each folder into the same folder under _site/.
Outputs are not executed: pages show the outputs saved in the notebooks unless --execute is given."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PAGES = r'\.(?:ipynb|qmd|html)$' # nbdev's own default for the docs (nbdev.quarto._def_file_re)


def clean_for_nbconvert(nb_path: Path):
    "Drop the cell keys nbdev adds that nbconvert's schema check rejects."
    nb = json.loads(nb_path.read_text())
    for cell in nb['cells']:
        cell.pop('has_sd', None)
        cell.get('metadata', {}).pop('execution', None)
    nb_path.write_text(json.dumps(nb, indent=1))


def pages(proc: Path) -> dict:
    "The processed notebooks under `proc`, found recursively, grouped by their folder relative to `proc`."
    groups = {}
    for nb in sorted(proc.rglob('*.ipynb')):
        if any(part.startswith(('.', '_')) for part in nb.relative_to(proc).parts): continue
        groups.setdefault(nb.parent.relative_to(proc), []).append(nb)
    return groups


def main(argv):
    # with --file-re, the nbs/sidebar.yml that nbdev-proc-nbs rewrites lists only pages, as `nbdev-docs` writes it
    proc_run = subprocess.run([str(BIN/'nbdev-proc-nbs'), '--file-re', PAGES], cwd=ROOT, check=False,
                              capture_output=True, text=True)
    if proc_run.returncode: print('nbdev-proc-nbs failed; some pages may be missing:\n' + proc_run.stderr[-3000:])
    proc = ROOT/'_proc'
    if not proc.exists(): print('nbdev-proc-nbs wrote nothing to _proc/'); return 1
    site = ROOT/'_site'; site.mkdir(exist_ok=True)
    groups = pages(proc)
    # one nbconvert per folder: lessons/00_config and api/00_config would otherwise both be 00_config.html
    for sub, nbs in groups.items():
        for nb in nbs: clean_for_nbconvert(nb)
        args = [str(BIN/'jupyter'), 'nbconvert', '--to', 'html', '--output-dir', str(site/sub), *map(str, nbs)]
        if '--execute' in argv: args.insert(3, '--execute')
        res = subprocess.run(args, cwd=proc/sub, capture_output=True, text=True)
        if res.returncode: print(res.stderr[-3000:]); return res.returncode
    print(f'wrote {sum(map(len, groups.values()))} pages to {site}')
    return 0


if __name__ == '__main__': sys.exit(main(sys.argv[1:]))
