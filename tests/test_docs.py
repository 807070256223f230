"`make docs` (tools/build_docs.py): every page builds offline from the saved outputs, or the build fails naming the notebook."
import hashlib
import os
import html
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NBS = ROOT/'nbs'
BUILD = [sys.executable, str(ROOT/'tools'/'build_docs.py')]
sys.path.insert(0, str(ROOT/'tools'/'docs'))
import stage  # noqa: E402

LESSONS = sorted((NBS/'lessons').glob('*.ipynb'))
API = sorted((NBS/'api').glob('*.ipynb'))
pytestmark = pytest.mark.xdist_group('docs')


def _tree_state(folder: Path) -> dict:
    return {str(f): (f.stat().st_mtime_ns, hashlib.md5(f.read_bytes()).hexdigest()) for f in sorted(folder.rglob('*')) if f.is_file()}


def _h1(nb: Path) -> str:
    for cell in json.loads(nb.read_text())['cells']:
        if cell['cell_type'] == 'markdown' and (m := re.search(r'^#\s+(.+?)\s*$', ''.join(cell['source']), re.M)): return m.group(1)


@pytest.fixture(scope='module')
def site(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('docs')
    nbs, out = _copy_nbs(tmp), tmp/'_site' # a copy: other edits to nbs/ while this runs cannot fail the check
    before = _tree_state(nbs)
    res = subprocess.run(BUILD + ['--nbs', str(nbs), '--out', str(out)], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:] + res.stdout[-2000:]
    assert _tree_state(nbs) == before, 'building the docs wrote into the notebooks folder'
    assert re.search(r'wrote \d+ pages to .+ \([\d.]+ MB\) in \d+ s; open .+index\.html', res.stdout), res.stdout
    return out


def test_every_notebook_has_a_page(site):
    assert LESSONS and API
    expected = ['index.html'] + [f'lessons/{stage.page_name(nb)}.html' for nb in LESSONS] + [f'api/{stage.page_name(nb)}.html' for nb in API]
    missing = [p for p in expected if not (site/p).is_file()]
    assert not missing, missing
    assert (site/'search.html').is_file() and (site/'searchindex.js').is_file()


def test_titles_come_from_the_h1(site):
    for nb in LESSONS + API:
        page = (site/nb.parent.name/f'{stage.page_name(nb)}.html').read_text()
        title = re.search(r'<title>(.*?)</title>', page, re.S).group(1)
        assert html.unescape(title).startswith(_h1(nb)), (nb.name, title)


def test_no_directives_or_front_matter_shown(site):
    for page in site.rglob('*.html'):
        text = page.read_text()
        for pre in re.findall(r'<pre>(.*?)</pre>', text, re.S):
            code = html.unescape(re.sub(r'<[^>]+>', '', pre))
            assert not re.search(r'(?m)^\s*#\|', code), (page, code[:200])
        body = html.unescape(re.sub(r'<[^>]+>', '', text))
        assert not re.search(r'(?m)^\s*(title|description|skip_showdoc|skip_exec|output-file):\s', body), page


def test_math_is_mathml_and_nothing_comes_from_the_network(site):
    ece = (site/'lessons'/'interpret.html').read_text()
    assert '<math' in ece and '$$' not in ece
    for page in site.rglob('*.html'):
        text = page.read_text()
        assert not re.search(r'<script[^>]+src="(?:https?:)?//', text), page
        assert not re.search(r'<link[^>]+href="(?:https?:)?//', text), page
        assert not re.search(r'<script[^>]*mathjax', text, re.I), page # no MathJax script (myst-nb's mathjax_ignore classes are harmless)


def test_api_pages_document_the_shown_names(site):
    page = (site/'api'/'models.html').read_text()
    assert 'id="build-model"' in page and 'backbone name' in page # heading and a docments parameter
    assert 'def build_model(' not in html.unescape(re.sub(r'<[^>]+>', '', page)) # the exported source stays out


def _copy_nbs(tmp_path) -> Path:
    nbs = tmp_path/'nbs'
    shutil.copytree(NBS, nbs, ignore=shutil.ignore_patterns('models', 'runs', '_*', '.*'))
    return nbs


def _add_cell(nb: Path, source: str, at: int = 1):
    d = json.loads(nb.read_text())
    d['cells'].insert(at, {'cell_type': 'code', 'execution_count': None, 'metadata': {}, 'outputs': [], 'source': source})
    nb.write_text(json.dumps(d))


def test_a_failing_import_fails_the_build_naming_the_notebook(tmp_path):
    nbs = _copy_nbs(tmp_path)
    _add_cell(nbs/'lessons'/LESSONS[9].name, 'import no_such_module_xyz')
    res = subprocess.run(BUILD + ['--nbs', str(nbs), '--out', str(tmp_path/'site'), '--only', LESSONS[9].stem],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert res.returncode != 0
    assert LESSONS[9].name in res.stderr and 'cell 1' in res.stderr and 'no_such_module_xyz' in res.stderr, res.stderr
    assert not (tmp_path/'site').exists()


def test_show_doc_of_an_unknown_name_fails_the_build(tmp_path):
    nbs = _copy_nbs(tmp_path)
    nb = nbs/'api'/API[0].name
    _add_cell(nb, 'show_doc(no_such_name_xyz)', at=len(json.loads(nb.read_text())['cells']))
    res = subprocess.run(BUILD + ['--nbs', str(nbs), '--out', str(tmp_path/'site'), '--only', f'api/{API[0].stem}'],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert res.returncode != 0 and API[0].name in res.stderr and 'no_such_name_xyz' in res.stderr, res.stderr


def test_directives_are_applied(tmp_path):
    cells = [('raw', '---\ntitle: x\n---'), ('markdown', '# A page\n> its summary'), ('code', '#| hide\nsecret = 1'),
             ('code', '#| include: false\nalso_secret = 1'), ('code', '#| export\ndef f(): pass'),
             ('code', '#| echo: false\nshown_output()'), ('code', '#| output: asis\n#| echo: false\nprint("**bold**")'),
             ('code', '#| solution\nanswer = 42'), ('markdown', 'See [the CLI](../api/cli.html).')]
    nb = {'cells': [{'cell_type': t, 'metadata': {}, 'source': s, **({'outputs': [], 'execution_count': None} if t == 'code' else {})}
                    for t, s in cells], 'metadata': {}, 'nbformat': 4, 'nbformat_minor': 5}
    nb['cells'][6]['outputs'] = [{'output_type': 'stream', 'name': 'stdout', 'text': '**bold**\n'}]
    src = tmp_path/'05_page.ipynb'; src.write_text(json.dumps(nb))
    assert stage.page_name(src) == 'page'
    assert stage.stage_notebook(src, tmp_path/'out.ipynb', 'finetune_course') == 'A page'
    out = json.loads((tmp_path/'out.ipynb').read_text())['cells']
    assert [c['cell_type'] for c in out] == ['markdown', 'code', 'markdown', 'code', 'markdown']
    assert out[1]['source'] == 'shown_output()' and 'remove-input' in out[1]['metadata']['tags']
    assert out[2]['source'] == '**bold**' and out[3]['source'] == 'answer = 42'
    assert '../api/cli.ipynb' in out[4]['source']
    assert not any('#|' in c['source'] or 'secret' in c['source'] for c in out)


def test_nbdev_processing_needs_no_gpu_nor_hidden_state():
    "nbdev's own processing (nbdev-docs, for people with Quarto) executes cells with imports: each must run alone."
    res = subprocess.run([sys.executable, str(ROOT/'tools'/'check_nbdev_proc.py')], capture_output=True, text=True,
                         cwd=ROOT, timeout=600, env={**os.environ, 'CUDA_VISIBLE_DEVICES': ''})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
