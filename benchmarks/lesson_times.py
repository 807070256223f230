#!/usr/bin/env python3
"""How long each lesson notebook runs in the quick profile, from pytest's JUnit XML of tests/test_notebooks.py.

Reads one or more JUnit files (`--junit FILE ...`) written by `pytest tests/test_notebooks.py --junitxml FILE`, or
runs the lessons itself (`--run`: `pytest -n 2 tests/test_notebooks.py -k lessons --junitxml ...`, about 20 minutes
on a 2-core CPU: run it on a quiet machine), and writes benchmarks/results/lesson_times.json: per lesson the seconds
its test took (the longest when several files time it), whether it passed, and the conditions (command, date, the
machine `common.write_result` records). A lesson that no file times keeps an estimate, marked `estimated`.
`--headers` then rewrites the machine-time sentence of each lesson's "Time needed:" line and the time columns of
the home page's lesson table from that JSON (run `python tools/build_readme.py` after it).

Usage: python benchmarks/lesson_times.py --junit run1.xml [run2.xml ...] [--headers]
       python benchmarks/lesson_times.py --run [--headers]"""
import argparse
import json
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

ROOT = Path(__file__).resolve().parent.parent
LESSONS = ROOT/'nbs'/'lessons'
INDEX = ROOT/'nbs'/'index.ipynb'
RESULT = Path(__file__).resolve().parent/'results'/'lesson_times.json'
RUN_COMMAND = ['-m', 'pytest', '-n', '2', 'tests/test_notebooks.py', '-k', 'lessons', '-p', 'no:cacheprovider']
# seconds for lessons that no JUnit file times yet (guesses from lessons of the same size, not measurements)
ESTIMATES = {'00_config': 40, '02_data': 60, '12_cli': 90}
TEST_ID = re.compile(r'test_notebook\[lessons/(?P<lesson>[^\]]+)\]')
FULL_PROFILE = 'full profile: written for a GPU, not yet timed'


def junit_times(path) -> dict:
    "{lesson: dict(seconds, outcome)} for the lesson notebooks a pytest JUnit XML file timed."
    root = ET.parse(path).getroot()
    out = {}
    for case in root.iter('testcase'):
        m = TEST_ID.search(case.get('name', ''))
        if not m: continue
        failed = any(case.find(tag) is not None for tag in ('failure', 'error'))
        outcome = 'skipped' if case.find('skipped') is not None else 'failed' if failed else 'passed'
        out[m['lesson']] = dict(seconds=round(float(case.get('time', 0)), 1), outcome=outcome)
    return out


def junit_date(path) -> str:
    "The day (YYYY-MM-DD) a JUnit file's first test suite started, or '' when it does not say."
    suite = next(iter(ET.parse(path).getroot().iter('testsuite')), None)
    return (suite.get('timestamp') or '')[:10] if suite is not None else ''


def lesson_names() -> list:
    "The lessons of the course, by notebook stem."
    return sorted(p.stem for p in LESSONS.glob('*.ipynb') if not p.name.startswith('_'))


def merge(files, lessons=None) -> dict:
    "Per lesson: the longest time any file records (all runs kept), or the estimate when none does."
    lessons = lessons or lesson_names()
    timed = [junit_times(f) for f in files]
    out = {}
    for name in lessons:
        runs = [t[name] for t in timed if name in t]
        if runs:
            out[name] = dict(seconds=max(r['seconds'] for r in runs), estimated=False,
                             outcome='passed' if all(r['outcome'] == 'passed' for r in runs) else 'failed',
                             runs=[r['seconds'] for r in runs])
        elif name in ESTIMATES:
            out[name] = dict(seconds=float(ESTIMATES[name]), estimated=True, outcome='not run', runs=[])
    return out


def minutes_text(seconds:float) -> str:
    "A duration as a header prints it: 'under a minute', 'about 1 minute', 'about 3 minutes'."
    if seconds < 60: return 'under a minute'
    n = round(seconds/60)
    return f'about {n} minute' + ('s' if n != 1 else '')


def machine_sentence(result:dict, lesson:str) -> str:
    "The machine-time sentence of `lesson`'s header, read from a lesson_times result."
    entry, m = result['lessons'][lesson], result['machine']
    label = 'estimated, not yet timed' if entry['estimated'] else 'reference result'
    where = f"`{result['command_short']}` on a {m['cpu_count']}-core {m['device'].upper()}, {result['date']}"
    return (f"Machine time: {minutes_text(entry['seconds'])} in the quick profile ({label}, "
            f"`benchmarks/results/lesson_times.json`: {where}); {FULL_PROFILE}.")


HEADER = re.compile(r'^Time needed: about (?P<minutes>\d+) minutes to read, run and do the exercises\.(?: (?P<machine>Machine time: .*))?$', re.M)


def header_of(nb_path) -> tuple:
    "(cell index, match) of a lesson's 'Time needed:' line, or (None, None)."
    cells = json.loads(Path(nb_path).read_text())['cells']
    for i, c in enumerate(cells):
        if c['cell_type'] != 'markdown': continue
        m = HEADER.search(''.join(c['source']))
        if m: return i, m
    return None, None


def student_minutes(lessons=None) -> dict:
    "{lesson: minutes a student needs}, read from each lesson's header."
    out = {}
    for name in lessons or lesson_names():
        _, m = header_of(LESSONS/f'{name}.ipynb')
        if m: out[name] = int(m['minutes'])
    return out


def hours_text(minutes:int) -> str:
    "A total as the home page prints it: 'about 14 hours 20 minutes'."
    h, m = divmod(int(minutes), 60)
    return f'about {h} hours' + (f' {m} minutes' if m else '')


def _save(path, nb):
    Path(path).write_text(json.dumps(nb, indent=1, ensure_ascii=False) + '\n')


def short_minutes(seconds:float) -> str:
    "A duration as the home page's lesson table prints it: '< 1 min', '3 min'."
    return '< 1 min' if seconds < 60 else f'{round(seconds/60)} min'


TABLE_ROW = re.compile(r'^\| (?P<num>\d\d) \| (?P<title>[^|]*) \| (?P<modules>[^|]*) \|(?P<times>.*)$')
TIME_PARAGRAPH = '**Time.**'


def table_times(result:dict, lesson:str, student:dict) -> str:
    "The two time columns of `lesson`'s row in the home page's table: student minutes, quick machine time."
    entry = result['lessons'][lesson]
    machine = short_minutes(entry['seconds']) + (' (estimated)' if entry['estimated'] else '')
    return f" {student[lesson]} min | {machine} |"


def time_paragraph(result:dict, student:dict) -> str:
    "The home page's paragraph on how long the course takes, from the lesson headers and a lesson_times result."
    m, quick = result['machine'], [e['seconds'] for e in result['lessons'].values()]
    n_est = sum(e['estimated'] for e in result['lessons'].values())
    est = f"; {n_est} of the {len(quick)} lessons are estimates, not yet timed" if n_est else ''
    return (f"{TIME_PARAGRAPH} The course takes a student {hours_text(sum(student.values()))} in all: reading, running "
            f"the cells and doing the exercises (each lesson's header and the table below give its share). The machine "
            f"time is much less: in the quick profile the lessons' cells take {minutes_text(sum(quick))} together, "
            f"from {minutes_text(min(quick))} to {minutes_text(max(quick))} per lesson (reference result, "
            f"`benchmarks/results/lesson_times.json`: `{result['command_short']}` on a {m['cpu_count']}-core "
            f"{m['device'].upper()}, {result['date']}{est}). The full profile (`FTC_PROFILE=full`) is written for a GPU "
            "and not yet timed.")


LESSON_TABLE = '| # | lesson | library modules it uses |'


def index_lines(result:dict, student:dict, text:str) -> str:
    "The home page's markdown with the time paragraph and the lesson table's time columns rewritten."
    by_num = {name[:2]: name for name in result['lessons']}
    out, in_table = [], False
    for line in text.split('\n'):
        row = TABLE_ROW.match(line)
        if line.startswith(TIME_PARAGRAPH): line = time_paragraph(result, student)
        elif line.startswith(LESSON_TABLE):
            line, in_table = LESSON_TABLE + ' student time | machine time, quick |', True
        elif in_table and line.startswith('|---'): line = '|---|---|---|---|---|'
        elif in_table and row and row['num'] in by_num and by_num[row['num']] in student:
            line = f"| {row['num']} | {row['title']} | {row['modules']} |" + table_times(result, by_num[row['num']], student)
        elif not line.startswith('|'): in_table = False
        out.append(line)
    return '\n'.join(out)


def write_index(result:dict, path=INDEX) -> bool:
    "Rewrite the home page's time paragraph and table columns from `result` and the lesson headers; whether it changed."
    nb, student, changed = json.loads(Path(path).read_text()), student_minutes(list(result['lessons'])), False
    for c in nb['cells']:
        if c['cell_type'] != 'markdown': continue
        src = ''.join(c['source'])
        new = index_lines(result, student, src)
        if new != src: c['source'], changed = new.splitlines(keepends=True), True
    if changed: _save(path, nb)
    return changed


def write_headers(result:dict) -> list:
    "Rewrite the machine-time sentence of every lesson's header from `result`; the changed notebooks."
    changed = []
    for name in result['lessons']:
        path = LESSONS/f'{name}.ipynb'
        i, m = header_of(path)
        if i is None: continue
        nb = json.loads(path.read_text())
        src = ''.join(nb['cells'][i]['source'])
        line = f"{m.group(0).split(' Machine time:')[0]} {machine_sentence(result, name)}"
        new = src[:m.start()] + line + src[m.end():]
        if new != src:
            nb['cells'][i]['source'] = new.splitlines(keepends=True)
            _save(path, nb); changed.append(path)
    return changed


def run_lessons(junit:Path) -> int:
    "Run the lesson notebooks as the test suite does, in 2 processes, writing JUnit XML to `junit`."
    cmd = [sys.executable, *RUN_COMMAND, f'--junitxml={junit}']
    print(' '.join(cmd), flush=True)
    return subprocess.call(cmd, cwd=ROOT)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group()
    src.add_argument('--junit', nargs='+', type=Path, help='JUnit XML files of runs of tests/test_notebooks.py')
    src.add_argument('--run', action='store_true', help='run the lessons with pytest -n 2 first (about 20 minutes)')
    ap.add_argument('--headers', action='store_true', help="rewrite the lessons' machine-time sentences from the JSON")
    ap.add_argument('--note', default='', help='recorded in the JSON, e.g. where the JUnit files came from')
    args = ap.parse_args(argv)
    if not (args.junit or args.run or args.headers): ap.error('give --junit FILE ..., --run or --headers')
    if args.junit or args.run:
        from common import write_result
        files, rc = args.junit, 0
        if args.run:
            files = [Path(tempfile.mkdtemp(prefix='lesson_times_'))/'lessons.xml']
            rc = run_lessons(files[0])
            if not files[0].exists(): print(f'pytest wrote no JUnit file (exit code {rc})'); return 1
        missing = [str(f) for f in files if not Path(f).exists()]
        if missing: ap.error(f'no such JUnit file: {", ".join(missing)}')
        lessons = merge(files)
        for name, e in lessons.items():
            print(f"{name:28s} {e['seconds']:7.1f} s  {'estimated' if e['estimated'] else e['outcome']}")
        dates = sorted({d for d in map(junit_date, files) if d})
        write_result('lesson_times', dict(
            profile='quick', command='pytest -n 2 tests/test_notebooks.py -k lessons', command_short='pytest -n 2',
            date=dates[-1] if dates else '', junit_files=[str(f) for f in files], note=args.note,
            full_profile=FULL_PROFILE, lessons=lessons,
            total_seconds=round(sum(e['seconds'] for e in lessons.values()), 1)))
        if rc: print(f'pytest exited with {rc}: the failed lessons are marked in the JSON')
    if args.headers:
        result = json.loads(RESULT.read_text())
        for p in write_headers(result): print(f'updated {p.relative_to(ROOT)}')
        if write_index(result): print(f'updated {INDEX.relative_to(ROOT)}')
        print('now run: .venv/bin/nbdev-clean --fname nbs/lessons && python tools/build_readme.py')
    return 0


if __name__ == '__main__': sys.exit(main())
