"""Numbers in the lessons' prose trace to code: a rate, percentage, ratio or score typed into markdown must be computed,
be a constant of the library or the lesson, or sit in a paragraph labelled as a reference result."""
import json, math, re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LESSONS = sorted((ROOT/'nbs'/'lessons').glob('*.ipynb'))
def _without_comments(src:str) -> str:
    "Python source without comments and docstring lines: their numbers are prose too."
    lines = (line.split('#', 1)[0] for line in src.splitlines())
    return '\n'.join(line for line in lines if not line.strip().startswith(('"', "'")))

def _recipe_rates() -> str:
    "The recipe's rates as the library computes them (3e-4 and 3e-6 are products of its constants, not literals)."
    from finetune_course.freeze import recipe_lrs
    head, body = recipe_lrs()
    return f'{head!r} {body.start!r} {body.stop!r}'

# the library's constants and defaults (a valid_pct of 0.2 may be called 20%)
LIBRARY = _recipe_rates() + '\n' + '\n'.join(_without_comments(f.read_text()) for f in sorted((ROOT/'finetune_course').glob('*.py'))
                     if f.name != '_modidx.py')

# a rate (3e-4), a percentage (18%), a ratio (4x, 1.5x), a score with two or more decimals (0.229), a speed (150 img/s)
NUMBER = re.compile(r'(?<![\w.^/-])(\d+(?:\.\d+)?e-\d+|\d+(?:\.\d+)?\s?%|\d+(?:\.\d+)?x\b|0\.\d{2,}|\d+(?:\.\d+)?\s?img/s)')
# cells where numbers are a student's to work out, or a worked example: not measurements
EXEMPT_HEADINGS = ('## Questionnaire', '## Exercises', '## Exercise', '### Exercise')
REFERENCE = re.compile(r'reference result|worked example', re.I) # labelled: measured elsewhere, or made-up numbers

def _cells(nb:Path) -> list:
    return json.loads(nb.read_text())['cells']

def _values(token:str) -> set:
    "The numeric values a prose token may appear as in code: 18% is 18 or 0.18, 3e-4 is 0.0003, 4x is 4."
    t = token.replace(' ', '').rstrip('%x').replace('img/s', '')
    v = float(t)
    out = {v}
    if token.rstrip().endswith('%'):
        out.add(v/100)
    return out

def _code_numbers(text:str) -> set:
    out = set()
    for m in re.finditer(r'(?<![\w.])\d+(?:\.\d+)?(?:e-?\d+)?', text):
        v = float(m.group(0))
        if math.isfinite(v):
            out.add(v)
    return out

def _close(v:float, pool:set) -> bool:
    return any(abs(v - p) <= 1e-12 + 1e-9*abs(p) for p in pool)

def untraced_numbers(nb:Path) -> list:
    "(cell index, token, context) for each number in markdown that neither code, the library nor a label accounts for."
    cells = _cells(nb)
    code = '\n'.join(''.join(c['source']) for c in cells if c['cell_type'] == 'code')
    pool = _code_numbers(code) | _code_numbers(LIBRARY)
    found = []
    for i, c in enumerate(cells):
        s = ''.join(c['source'])
        if c['cell_type'] != 'markdown' or s.lstrip().startswith(EXEMPT_HEADINGS):
            continue
        for para in s.split('\n\n'):
            if REFERENCE.search(para):
                continue
            for m in NUMBER.finditer(para):
                if not any(_close(v, pool) for v in _values(m.group(0))):
                    found.append((i, m.group(0), para[max(0, m.start()-60):m.end()+20].replace('\n', ' ')))
    return found

@pytest.mark.parametrize('nb', LESSONS, ids=[f.stem for f in LESSONS])
def test_prose_numbers_trace_to_code(nb):
    found = untraced_numbers(nb)
    assert not found, 'numbers typed into prose that no cell computes (compute them, or label a reference result):\n' + \
        '\n'.join(f'  cell {i}: {t!r} in ...{ctx}...' for i, t, ctx in found)

def test_the_check_catches_a_typed_number(tmp_path):
    nb = tmp_path/'x.ipynb'
    cell = lambda kind, s: dict(cell_type=kind, metadata={}, source=[s], **(dict(outputs=[], execution_count=None) if kind == 'code' else {}))
    nb.write_text(json.dumps(dict(cells=[cell('code', 'lr = 3e-4\nacc = learn.validate()[1]'),
                                        cell('markdown', 'At `3e-4` the accuracy reached 94.7% (loss 0.237).'),
                                        cell('markdown', 'A reference result from the benchmark: 93.1%.')])))
    test = [t for _, t, _ in untraced_numbers(nb)]
    assert test == ['94.7%', '0.237'], test

def _lesson_times():
    "benchmarks/lesson_times.py as a module: it formats the headers' machine times and the home page's totals."
    import importlib.util
    spec = importlib.util.spec_from_file_location('lesson_times', ROOT/'benchmarks'/'lesson_times.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

def test_lesson_headers_state_student_and_machine_times():
    lt = _lesson_times()
    result = json.loads(lt.RESULT.read_text())
    for nb in LESSONS:
        _, m = lt.header_of(nb)
        assert m, f"{nb.name}: no 'Time needed: about N minutes to read, run and do the exercises.' line in its header"
        assert nb.stem in result['lessons'], f'{nb.name} is not in {lt.RESULT.name}: run benchmarks/lesson_times.py'
        assert m['machine'] == lt.machine_sentence(result, nb.stem), \
            f"{nb.name}: header's machine time disagrees with {lt.RESULT.name}: run benchmarks/lesson_times.py --headers"

def test_readme_times_are_the_sum_of_the_headers():
    lt = _lesson_times()
    result = json.loads(lt.RESULT.read_text())
    student = lt.student_minutes([nb.stem for nb in LESSONS])
    readme = (ROOT/'README.md').read_text()
    assert f'takes a student {lt.hours_text(sum(student.values()))} in all' in readme, 'README total student time is not the sum of the lesson headers'
    assert 'runs in a few minutes' not in readme
    assert lt.index_lines(result, student, readme) == readme, \
        'README time paragraph or lesson table disagrees with the headers or lesson_times.json: run benchmarks/lesson_times.py --headers'
