"""Stage the notebooks for the offline docs site: copies under a temporary folder, never the tracked files.

Each page keeps the outputs saved in its notebook (nothing is executed). Per notebook: the YAML front matter
goes; `#| hide` and `#| include: false` cells go, and so do `#| export`/`#| exporti` cells (a reference page
shows the documentation, not the exported source, as nbdev's own docs do); every other `#|` line is
removed from the cells shown (`#| echo: false` hides the source, `#| output: false` the outputs,
`#| output: asis` shows the outputs as markdown); each `show_doc(X)` cell becomes markdown, a signature, the
docstring and the docments parameter table, documented from the installed package. For that, only the
notebook's top-level import statements run (and, for a library notebook, its module is imported); a
failing import or an unknown name raises `StageError` naming the notebook and the cell."""
import ast
import copy
import html
import importlib
import inspect
import json
import re
import warnings
from pathlib import Path

DIRECTIVE = re.compile(r'^\s*#\|\s*([\w-]+)(?:\s*:\s*(.*?)|\s+(.*?))?\s*$') # `#| key: value`, `#| key value`
SKIP_IMPORTS = {'cuda', 'net', 'slow', 'notest'} # cells the tests skip on a CPU-only, offline machine
DROP = {'hide', 'export', 'exporti'}
H1 = re.compile(r'^#\s+(.+?)\s*$', re.M)
HEADING = re.compile(r'^(#{1,6})\s+\S', re.M)
LOCAL_LINK = re.compile(r'\]\((?![\w+.-]+:)((?:[^)\s#]*/)?)(?:\d+[_-])?([\w-]+)\.(?:html|ipynb)(#[^)\s]*)?\)')


class StageError(Exception):
    "A notebook that cannot become a page: the message names the notebook, the cell and the error."


def page_name(nb: Path) -> str:
    "`03_models.ipynb` -> `models`: the page URL without the ordering number."
    return re.sub(r'^\d+[_-]', '', nb.stem)


def directives(source: str) -> tuple:
    "(`#|` directives as a dict, the source without its `#|` lines)."
    found, kept = {}, []
    for line in source.splitlines():
        m = DIRECTIVE.match(line)
        if m:
            found[m.group(1)] = (m.group(2) or m.group(3) or '').strip().strip('"\'')
        else: kept.append(line)
    return found, '\n'.join(kept).strip('\n')


def _parse(source: str):
    "The cell's AST, with IPython magics and shell lines blanked."
    lines = ['' if ln.lstrip().startswith(('%', '!')) else ln for ln in source.splitlines()]
    return ast.parse('\n'.join(lines))


def _src(cell) -> str:
    s = cell.get('source', '')
    return ''.join(s) if isinstance(s, list) else s


def namespace(nb: dict, nb_path: Path, lib_name: str) -> dict:
    "Run only the notebook's top-level imports (and import its module, if it exports one) in a fresh namespace."
    ns = {'__name__': f'_docs_{page_name(nb_path)}'}
    for idx, cell in enumerate(nb['cells']):
        if cell['cell_type'] != 'code': continue
        d, src = directives(_src(cell))
        if d.keys() & SKIP_IMPORTS or d.get('eval', '').lower() == 'false': continue
        try: tree = _parse(src)
        except SyntaxError as e: raise StageError(f'{nb_path} cell {idx}: SyntaxError: {e}') from e
        imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        if imports:
            code = compile(ast.Module(body=imports, type_ignores=[]), f'{nb_path}:cell {idx}', 'exec')
            try:
                with warnings.catch_warnings(): # the libraries' own import-time deprecation notices
                    warnings.simplefilter('ignore'); exec(code, ns)
            except Exception as e: raise StageError(f'{nb_path} cell {idx}: {type(e).__name__}: {e}') from e
        if 'default_exp' in d:
            mod = f"{lib_name}.{d['default_exp']}"
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter('ignore'); ns.update({k: v for k, v in vars(importlib.import_module(mod)).items() if not k.startswith('__')})
            except Exception as e: raise StageError(f'{nb_path} cell {idx}: importing {mod}: {type(e).__name__}: {e}') from e
    return ns


def _anno(a) -> str:
    if a is inspect.Parameter.empty or a is None: return ''
    if isinstance(a, str): return a
    if isinstance(a, type): return a.__qualname__
    return re.sub(r'\b(?:typing|pathlib|torch\.nn\.modules\.\w+|collections\.abc)\.', '', str(a))


def _value(d) -> str:
    "A default value as code: classes and functions by name, not `<class ...>`."
    if inspect.isclass(d) or inspect.isroutine(d): return getattr(d, '__qualname__', repr(d))
    return repr(d)


def _default(d) -> str:
    if d is inspect.Parameter.empty: return ''
    r = _value(d)
    return r if len(r) < 60 else r[:57] + '...'


def _cell(text: str) -> str:
    "Text for a markdown table cell."
    return str(text).replace('|', '\\|').replace('\n', ' ')


def _code(text: str) -> str:
    "Inline code for a table cell (no smart quotes on defaults), empty stays empty."
    return f'``{_cell(text)}``' if text and '`' not in text else _cell(text)


def signature(obj, name: str) -> str:
    "`name(arg:type=default, ...)->ret`, one parameter a line when it is long."
    try: sig = inspect.signature(obj)
    except (TypeError, ValueError): return name
    parts = []
    for p in sig.parameters.values():
        if p.name == 'self': continue
        s = {inspect.Parameter.VAR_POSITIONAL: '*', inspect.Parameter.VAR_KEYWORD: '**'}.get(p.kind, '') + p.name
        if _anno(p.annotation): s += ':' + _anno(p.annotation)
        if p.default is not inspect.Parameter.empty: s += '=' + _value(p.default)
        parts.append(s)
    ret = '->' + _anno(sig.return_annotation) if _anno(sig.return_annotation) else ''
    one = f"{name}({', '.join(parts)}){ret}"
    if len(one) <= 90 or len(parts) < 2: return one
    return f"{name}(\n" + ''.join(f'    {p},\n' for p in parts) + f"){ret}"


def _docments(obj) -> dict:
    from fastcore.docments import docments
    try: return docments(obj, full=True)
    except Exception: return {}


def render_doc(obj, name: str, level: int) -> str:
    "Markdown for one `show_doc`: heading, signature, docstring, parameter table."
    kind = 'class' if inspect.isclass(obj) else ''
    sig = signature(obj, name)
    try: ast.parse(f'def {sig.split("(", 1)[0].replace(".", "_")}({sig.split("(", 1)[1]}: pass' if '(' in sig else sig)
    except SyntaxError: lang = 'text' # a default whose repr is not code: no highlighting rather than a lexer warning
    else: lang = 'python'
    out = [f"{'#'*level} {name}", '', f'```{lang}', (kind + ' ' if kind else '') + sig, '```', '']
    doc = inspect.getdoc(obj)
    if doc: out += [doc, '']
    params = {k: v for k, v in _docments(obj).items() if k not in ('self', 'return')}
    if any(v.get('docment') for v in params.values()):
        out += ['| | **Type** | **Default** | **Details** |', '|---|---|---|---|']
        for k, v in params.items():
            out.append(f"| {_cell(k)} | {_code(_anno(v.get('anno', inspect.Parameter.empty)))} | "
                       f"{_code(_default(v.get('default', inspect.Parameter.empty)))} | {_cell(v.get('docment') or '')} |")
        ret = _docments(obj).get('return') or {}
        if ret.get('docment') or _anno(ret.get('anno', inspect.Parameter.empty)):
            out.append(f"| **Returns** | {_code(_anno(ret.get('anno', inspect.Parameter.empty)))} | | {_cell(ret.get('docment') or '')} |")
        out.append('')
    return '\n'.join(out)


def _show_doc_calls(src: str):
    "The `show_doc(...)` calls if the cell holds nothing else, else None."
    try: tree = _parse(src)
    except SyntaxError: return None
    calls = [n.value for n in tree.body if isinstance(n, ast.Expr) and isinstance(n.value, ast.Call)
             and isinstance(n.value.func, ast.Name) and n.value.func.id == 'show_doc']
    return calls if calls and len(calls) == len(tree.body) else None


def _outputs_as_markdown(outputs) -> str:
    parts = []
    for o in outputs:
        if o.get('output_type') == 'stream': parts.append(_src({'source': o.get('text', '')}))
        elif 'data' in o:
            data = o['data']
            for mime in ('text/markdown', 'text/html', 'text/plain'):
                if mime in data: parts.append(_src({'source': data[mime]})); break
    return '\n\n'.join(p.strip('\n') for p in parts if p.strip())


def stage_notebook(nb_path: Path, dest: Path, lib_name: str, order: str = ''):
    "Write the page notebook for `nb_path` to `dest`; return its title."
    nb = json.loads(nb_path.read_text())
    cells, out, level = nb['cells'], [], 1
    ns = namespace(nb, nb_path, lib_name) # every notebook: a failing import fails its page
    title = None
    for idx, cell in enumerate(cells):
        src = _src(cell)
        if cell['cell_type'] == 'raw':
            if src.lstrip().startswith('---'): continue # YAML front matter
            out.append(cell); continue
        d, body = directives(src)
        if d.keys() & DROP or d.get('include', '').lower() == 'false': continue
        if cell['cell_type'] == 'markdown':
            if not out and src.lstrip().startswith('---\n'): # front matter written as markdown
                src = re.sub(r'\A\s*---\n.*?\n---\n', '', src, flags=re.S)
            if title is None and (m := H1.search(src)): title = m.group(1).strip()
            # links between pages (`../api/cli.html` as on nbdev's site, or `NN_x.ipynb`) become checked page links
            src = LOCAL_LINK.sub(lambda m: f'](<{m.group(1)}{m.group(2)}.ipynb{m.group(3) or ""}>)', src)
            for m in HEADING.finditer(src): level = len(m.group(1))
            new = copy.deepcopy(cell); new['source'] = src; out.append(new); continue
        calls = _show_doc_calls(body)
        if calls:
            md = []
            for call in calls:
                if not call.args: raise StageError(f'{nb_path} cell {idx}: show_doc() needs the object to document')
                expr = ast.unparse(call.args[0])
                try: obj = eval(compile(ast.Expression(call.args[0]), f'{nb_path}:cell {idx}', 'eval'), ns)
                except Exception as e: raise StageError(f'{nb_path} cell {idx}: show_doc({expr}): {type(e).__name__}: {e}') from e
                kw = {k.arg: ast.literal_eval(k.value) for k in call.keywords if k.arg in ('name', 'title_level')
                      and isinstance(k.value, ast.Constant)}
                lvl = min(kw.get('title_level', 3), level + 1)
                md.append(render_doc(obj, kw.get('name') or expr, max(lvl, 2)))
            out.append({'cell_type': 'markdown', 'metadata': {}, 'source': '\n'.join(md)}); continue
        if not body.strip() and not cell.get('outputs'): continue
        new = copy.deepcopy(cell); new['source'] = body
        tags = list(new.get('metadata', {}).get('tags', []))
        if d.get('echo', '').lower() == 'false': tags.append('remove-input')
        output = d.get('output', '').lower()
        if output == 'false': tags.append('remove-output')
        if output == 'asis':
            md = _outputs_as_markdown(new.get('outputs', []))
            new['outputs'] = []
            if d.get('echo', '').lower() != 'false' and body.strip(): out.append(new)
            if md: out.append({'cell_type': 'markdown', 'metadata': {}, 'source': md})
            continue
        if tags: new.setdefault('metadata', {})['tags'] = tags
        out.append(new)
    if title is None: raise StageError(f"{nb_path}: no '# Title' heading in a markdown cell: a page needs one")
    nb['cells'] = out
    ids = set()
    for i, c in enumerate(out):
        c.get('metadata', {}).pop('execution', None)
        if not c.get('id') or c['id'] in ids: c['id'] = f'cell-{i}'
        ids.add(c['id'])
    nb['nbformat'], nb['nbformat_minor'] = 4, 5
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(nb, indent=1, ensure_ascii=False))
    return title


def _toctree(caption: str, entries: list) -> str:
    lines = ['```{toctree}', ':hidden:', f':caption: {caption}', ':maxdepth: 1', '']
    lines += [f'{html.escape(label, quote=False)} <{target}>' for label, target in entries]
    return '\n'.join(lines + ['```'])


def stage(nbs: Path, dest: Path, lib_name: str, only: str = '') -> list:
    """Stage `nbs/index.ipynb`, `nbs/lessons/*.ipynb` and `nbs/api/*.ipynb` into `dest`.
    `only`: a regex; notebooks whose path relative to `nbs` does not match are left out (the home page stays).
    Returns the (source notebook, staged page) pairs."""
    index = nbs/'index.ipynb'
    if not index.exists(): raise StageError(f'{index}: missing (the home page)')
    pages, toc = [], {}
    for folder, caption in (('lessons', 'Lessons'), ('api', 'Library reference')):
        for nb in sorted((nbs/folder).glob('*.ipynb')):
            rel = nb.relative_to(nbs).as_posix()
            if only and not re.search(only, rel): continue
            target = f'{folder}/{page_name(nb)}'
            title = stage_notebook(nb, dest/f'{target}.ipynb', lib_name)
            num = re.match(r'^(\d+)', nb.stem)
            label = f'{num.group(1)} · {title}' if folder == 'lessons' and num else (page_name(nb) if folder == 'api' else title)
            toc.setdefault(caption, []).append((label, target))
            pages.append((nb, dest/f'{target}.ipynb'))
    stage_notebook(index, dest/'index.ipynb', lib_name)
    home = json.loads((dest/'index.ipynb').read_text())
    home['cells'] += [{'id': f'toctree-{i}', 'cell_type': 'markdown', 'metadata': {}, 'source': _toctree(cap, entries)}
                      for i, (cap, entries) in enumerate(toc.items())]
    (dest/'index.ipynb').write_text(json.dumps(home, indent=1, ensure_ascii=False))
    return [(index, dest/'index.ipynb')] + pages
