#!/usr/bin/env python3
"""Write README.md from nbs/index.ipynb without Quarto (nbdev-readme needs Quarto).

Markdown cells are copied as they are; visible code cells become fenced python blocks; cells
marked `#| hide` are left out. `--check` exits 1 when README.md differs from what would be written."""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEADER = '<!-- Generated from nbs/index.ipynb by tools/build_readme.py: edit the notebook, not this file. -->\n\n'


def render(nb_path: Path = ROOT/'nbs'/'index.ipynb') -> str:
    cells = json.loads(nb_path.read_text())['cells']
    parts = []
    for cell in cells:
        src = ''.join(cell['source']).strip()
        if not src: continue
        if cell['cell_type'] == 'markdown': parts.append(src)
        elif cell['cell_type'] == 'code' and not src.startswith('#| hide'): parts.append(f'```python\n{src}\n```')
    return HEADER + '\n\n'.join(parts) + '\n'


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    text, readme = render(), ROOT/'README.md'
    if '--check' in argv:
        if not readme.exists() or readme.read_text() != text:
            print('README.md is out of date with nbs/index.ipynb: run python tools/build_readme.py'); return 1
        print('README.md matches nbs/index.ipynb'); return 0
    readme.write_text(text); print(f'wrote {readme}'); return 0


if __name__ == '__main__': sys.exit(main())
