#!/usr/bin/env python3
"""Print the shape of the library's code and check its module graph.

Over finetune_course/*.py (not _modidx.py, __init__.py): number of functions, median function length,
functions over 40 lines, `a; b` statements, lines over 120 characters, and per module the notebook(s) it is
exported from (its `# %% ../nbs/...` markers) and the library modules it imports.
The numbers are a report. Exit 1 (a gate) when a module is exported from more than one notebook or imports
a module that comes later in the flow; else 0."""
import ast
import io
import re
import statistics
import sys
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PKG = 'finetune_course'
FLOW = ['config', 'images', 'datasets', 'data', 'weights', 'inference', 'monitor', 'models', 'freeze', 'lr_find',
        'strategies', 'augment', 'diagnose', 'interpret', 'gradcam', 'report', 'evaluate', 'teach', 'workshop', 'cli',
        'exercises']
SKIP = {'_modidx.py', '__init__.py'}
MAX_FUNC_LINES = 40
MAX_LINE = 120
MARKER = re.compile(r'^# %% (\S+\.ipynb)', re.M)


def body_length(fn:ast.FunctionDef) -> int:
    "Lines of a function's body after its signature and docstring (docments signatures make whole lengths longer)."
    body = fn.body
    if len(body) > 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]
    return fn.end_lineno - body[0].lineno + 1


def functions(tree:ast.AST) -> list[tuple[str, int, int, int]]:
    "(qualified name, first line, length in lines, body length) of every function and method, nested ones included."
    out = []
    def walk(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out.append((prefix + child.name, child.lineno, child.end_lineno - child.lineno + 1, body_length(child)))
                walk(child, f'{prefix}{child.name}.')
            elif isinstance(child, ast.ClassDef):
                walk(child, f'{prefix}{child.name}.')
            else:
                walk(child, prefix)
    walk(tree, '')
    return out


def semicolons(text:str) -> int:
    "Number of `;` statement separators (outside strings and comments)."
    toks = tokenize.generate_tokens(io.StringIO(text).readline)
    return sum(t.type == tokenize.OP and t.string == ';' for t in toks)


def long_lines(text:str, limit:int=MAX_LINE) -> int:
    "Number of lines longer than `limit` characters."
    return sum(len(line) > limit for line in text.splitlines())


def notebooks(text:str) -> list[str]:
    "The notebooks a module is exported from, read from its `# %% ../nbs/...ipynb` cell markers."
    return sorted(set(MARKER.findall(text)))


def imported_modules(tree:ast.AST, pkg:str=PKG) -> set[str]:
    "The library modules a module imports, anywhere in it (relative or absolute imports)."
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            mod = node.module or ''
            if node.level == 1 and mod:
                found.add(mod.split('.')[0])
            elif node.level == 1:
                found.update(a.name for a in node.names)
            elif mod == pkg:
                found.update(a.name for a in node.names)
            elif mod.startswith(pkg + '.'):
                found.add(mod.split('.')[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split('.')[1] for a in node.names if a.name.startswith(pkg + '.'))
    return found


def later_imports(name:str, imported:set, flow:list=FLOW) -> list[str]:
    "The imported modules that come after `name` in the flow (modules outside the flow are not judged)."
    if name not in flow:
        return []
    pos = flow.index(name)
    return sorted(m for m in imported if m in flow and flow.index(m) > pos)


def module_report(path:Path) -> dict:
    "The numbers and the graph facts of one module file."
    text = path.read_text()
    tree = ast.parse(text)
    funcs = functions(tree)
    imported = imported_modules(tree)
    return dict(module=path.stem, functions=funcs, semicolons=semicolons(text), long_lines=long_lines(text),
                notebooks=notebooks(text), imports=sorted(imported), later=later_imports(path.stem, imported))


def problems(rep:dict) -> list[str]:
    "What fails the gate for one module: several source notebooks, or an import of a later module."
    out = []
    if len(rep['notebooks']) > 1:
        out.append(f"exported from {len(rep['notebooks'])} notebooks")
    if rep['later']:
        out.append(f"imports later module(s) {', '.join(rep['later'])}")
    return out


def print_report(reps:list):
    "The summary, the long functions and the per-module table."
    lengths = [n for r in reps for _, _, n, _ in r['functions']]
    bodies = [b for r in reps for *_, b in r['functions']]
    longf = [(r['module'], f, line, n) for r in reps for f, line, n, _ in r['functions'] if n > MAX_FUNC_LINES]
    print(f'{len(reps)} modules, {len(lengths)} functions, median function '
          f'{statistics.median(lengths) if lengths else 0:g} lines from def to end '
          f'(median body after signature and docstring: {statistics.median(bodies) if bodies else 0:g})')
    print(f"`a; b` statements: {sum(r['semicolons'] for r in reps)}; "
          f"lines over {MAX_LINE} chars: {sum(r['long_lines'] for r in reps)}")
    print(f'functions over {MAX_FUNC_LINES} lines: {len(longf)}')
    for mod, f, line, n in longf:
        print(f'  {mod}.py:{line} {f} ({n} lines)')
    print()
    for r in reps:
        flag = '; '.join(problems(r))
        nbs = ', '.join(nb.replace('../nbs/', '') for nb in r['notebooks']) or '(no notebook marker)'
        med = statistics.median(n for _, _, n, _ in r['functions']) if r['functions'] else 0
        print(f"{r['module']:<11} {len(r['functions']):>3} functions, median {med:>4g}, "
              f"{r['semicolons']:>3} `;`, {r['long_lines']:>3} long  from {nbs}" + (f'  FAIL: {flag}' if flag else ''))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    folder = Path(argv[0]) if argv else ROOT/PKG
    paths = sorted(p for p in folder.glob('*.py') if p.name not in SKIP)
    reps = [module_report(p) for p in paths]
    print_report(reps)
    outside = [r['module'] for r in reps if r['module'] not in FLOW]
    if outside:
        print(f"modules not in the flow order (add them to FLOW in tools/function_metrics.py): {', '.join(outside)}")
    failing = [r['module'] for r in reps if problems(r)]
    if failing:
        print(f"FAIL: {', '.join(failing)}: each module comes from one notebook and imports only earlier modules")
        return 1
    print('module graph ok: each module from one notebook, no import of a later module')
    return 0


if __name__ == '__main__':
    sys.exit(main())
