#!/usr/bin/env python3
"""Print, for each lesson in nbs/lessons/, how much of its code is exported library code and how long its cells are.

Code lines are the non-blank lines of code cells, without directive lines (`#| export`, `#| hide`, ...).
A lesson is flagged when more than 30% of its code lines are exported or its median code cell is longer
than 6 lines. This is a report: it always exits 0."""
import json
import re
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LESSONS = ROOT/'nbs'/'lessons'
MAX_EXPORTED_PCT = 30
MAX_MEDIAN_CELL = 6
DIRECTIVE = re.compile(r'^\s*#\s*\|\s*(\S*)')
EXPORTS = {'export', 'exports', 'exporti'}


def split_cell(source:str) -> tuple[list, list]:
    "The directive names and the code lines (non-blank, not directives) of one cell's source."
    directives, code = [], []
    for line in source.splitlines():
        m = DIRECTIVE.match(line)
        if m:
            directives.append(m.group(1).rstrip(':'))
        elif line.strip():
            code.append(line)
    return directives, code


def is_exported(directives:list) -> bool:
    "Does a cell with these directives go into a module?"
    return any(d in EXPORTS for d in directives)


def cell_sizes(nb:dict) -> list[tuple[int, bool]]:
    "(code lines, exported?) for every code cell of a notebook that has at least one code line."
    sizes = []
    for cell in nb['cells']:
        if cell['cell_type'] != 'code':
            continue
        directives, code = split_cell(''.join(cell['source']))
        if code:
            sizes.append((len(code), is_exported(directives)))
    return sizes


def lesson_row(nb:dict, name:str) -> dict:
    "One row of the table: code lines, exported lines and %, code cells, median cell lines, flags."
    sizes = cell_sizes(nb)
    lines = sum(n for n, _ in sizes)
    exported = sum(n for n, e in sizes if e)
    pct = 100*exported/lines if lines else 0.
    median = float(statistics.median(n for n, _ in sizes)) if sizes else 0.
    flags = []
    if pct > MAX_EXPORTED_PCT:
        flags.append(f'exported>{MAX_EXPORTED_PCT}%')
    if median > MAX_MEDIAN_CELL:
        flags.append(f'median>{MAX_MEDIAN_CELL}')
    return dict(lesson=name, code_lines=lines, exported_lines=exported, exported_pct=round(pct, 1),
                code_cells=len(sizes), median_cell=median, flags=' '.join(flags))


def table(rows:list) -> str:
    "The rows as an aligned plain-text table."
    cols = list(rows[0]) if rows else []
    cells = [cols] + [[str(r[c]) for c in cols] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    return '\n'.join('  '.join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    folder = Path(argv[0]) if argv else LESSONS
    rows = [lesson_row(json.loads(p.read_text()), p.stem) for p in sorted(folder.glob('*.ipynb'))]
    print(f'lessons in {folder}: exported code at most {MAX_EXPORTED_PCT}%, '
          f'median code cell at most {MAX_MEDIAN_CELL} lines')
    print(table(rows))
    flagged = [r['lesson'] for r in rows if r['flags']]
    print(f'{len(flagged)} of {len(rows)} lessons flagged' + (f': {", ".join(flagged)}' if flagged else ''))
    return 0


if __name__ == '__main__':
    sys.exit(main())
