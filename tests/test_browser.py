"""Real-browser checks with the system Chromium (playwright): the docs site, the augment explorer live in
JupyterLab, and a run's report.html. No request may leave the machine: each is recorded and aborted."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import pytest

CHROMIUM = Path('/usr/bin/chromium')
if not CHROMIUM.exists():
    pytest.skip(f'{CHROMIUM} is missing (`make chromium` installs it as root): browser tests skipped',
                allow_module_level=True)

from playwright.sync_api import sync_playwright  # noqa: E402

pytestmark = pytest.mark.xdist_group('browser')  # one Chromium at a time under `pytest -n 2 --dist loadgroup`

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
LESSONS = sorted((ROOT/'nbs'/'lessons').glob('[0-9][0-9]_*.ipynb'))
ARGS = ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync']
LOCAL_HOSTS = {'127.0.0.1', 'localhost', '::1'}


def is_local(url: str) -> bool:
    "True for URLs that stay on this machine."
    u = urlparse(url)
    return u.scheme in ('file', 'data', 'blob', 'about') or u.hostname in LOCAL_HOSTS


@dataclass
class Tab:
    "A page with what it logged: console errors and uncaught exceptions, and requests that would leave the machine."
    page: object
    errors: list = field(default_factory=list)
    external: list = field(default_factory=list)

    def clear(self):
        self.errors.clear(); self.external.clear()


@pytest.fixture(scope='module')
def browser():
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, timeout=60_000)
        yield b
        b.close()


@pytest.fixture
def new_tab(browser):
    "Factory of `Tab`s, each in its own context; external requests are aborted so no test waits on the network."
    contexts = []
    def make(**kw) -> Tab:
        ctx = browser.new_context(service_workers='block', **kw)
        contexts.append(ctx)
        ctx.route(lambda url: not is_local(url), lambda route: route.abort())
        tab = Tab(ctx.new_page())
        def on_console(m):
            if m.type == 'error': tab.errors.append(f"console: {m.text} ({m.location['url']})")
        tab.page.on('console', on_console)
        tab.page.on('pageerror', lambda e: tab.errors.append(f'uncaught: {e}'))
        tab.page.on('request', lambda r: None if is_local(r.url) else tab.external.append(r.url))
        tab.page.on('websocket', lambda ws: None if is_local(ws.url) else tab.external.append(ws.url))
        return tab
    yield make
    for ctx in contexts: ctx.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float, what: str):
    "Poll `url` until it answers 200; fail with `what` if `proc` exits or `timeout` seconds pass."
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None: pytest.fail(f'{what} exited with code {proc.returncode} before answering {url}')
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200: return
        except OSError: pass
        time.sleep(0.3)
    pytest.fail(f'{what} did not answer {url} within {timeout:.0f} s')


@contextmanager
def process_group(cmd, **kw):
    "A child process in its own session, killed with its children (SIGTERM, then SIGKILL) at the end."
    proc = subprocess.Popen(cmd, start_new_session=True, **kw)
    def signal_group(sig):
        try: os.killpg(proc.pid, sig)
        except ProcessLookupError: pass
    try: yield proc
    finally:
        signal_group(signal.SIGTERM)
        try: proc.wait(timeout=15)
        except subprocess.TimeoutExpired: signal_group(signal.SIGKILL); proc.wait(timeout=15)
        signal_group(signal.SIGKILL) # children (a kernel) that outlived the leader


def images(page) -> list:
    "[src, complete, naturalWidth] of every <img> outside navigation, header and footer, once all have loaded."
    page.evaluate("document.querySelectorAll('img[loading=lazy]').forEach(i => { i.loading = 'eager'; })")
    page.wait_for_function("Array.from(document.images).every(i => i.complete)", timeout=15_000)
    return page.evaluate("""Array.from(document.images).filter(i => !i.closest('nav, header, footer, aside'))
                            .map(i => [i.currentSrc.slice(0, 80), i.complete, i.naturalWidth])""")


def notebook_has_png(nb: Path) -> bool:
    cells = json.loads(nb.read_text())['cells']
    return any('image/png' in o.get('data', {}) or 'data:image/png' in ''.join(o.get('data', {}).get('text/html', ''))
               for c in cells for o in c.get('outputs', []))


# ---------------------------------------------------------------------------- the docs site

@dataclass
class Site:
    root: Path
    base: str
    pages: list

    def url(self, page: Path) -> str: return self.base + page.relative_to(self.root).as_posix()


@pytest.fixture(scope='module')
def site(tmp_path_factory):
    "The docs site built once by tools/build_docs.py, served by http.server on 127.0.0.1."
    out = tmp_path_factory.mktemp('site')
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, 'tools/build_docs.py', '--out', str(out)], cwd=ROOT, capture_output=True,
                         text=True, timeout=900)
    assert res.returncode == 0, f'build_docs.py failed ({res.returncode}):\n{res.stdout[-3000:]}{res.stderr[-3000:]}'
    print(f'docs site built in {time.monotonic() - t0:.0f} s')
    pages = sorted(p for p in out.rglob('*.html') if not p.relative_to(out).as_posix().startswith(('_', '.')))
    names = [p.relative_to(out).as_posix() for p in pages]
    assert (out/'index.html').exists(), f'no index.html in the built site; pages: {names[:20]}'
    port = free_port()
    with process_group([sys.executable, '-m', 'http.server', '--bind', '127.0.0.1', '--directory', str(out), str(port)],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as proc:
        base = f'http://127.0.0.1:{port}/'
        wait_http(base + 'index.html', proc, 30, 'python -m http.server')
        yield Site(out, base, pages)


def lesson_page(site: Site, nb: Path) -> Path:
    "The page of lesson notebook `nb`: named `NN_name.html` or `name.html`, in a lessons/ folder when names clash."
    stem = nb.stem; name = stem.split('_', 1)[1]
    found = [p for p in site.pages if p.stem in (stem, name)]
    found.sort(key=lambda p: ('lessons' not in p.relative_to(site.root).parts, 'api' in p.relative_to(site.root).parts))
    assert found, f'no page for lesson {nb.name} (looked for {stem}.html or {name}.html under {site.root})'
    return found[0]


def test_every_page_loads_without_errors_or_external_requests(site, new_tab):
    tab, problems = new_tab(), {}
    for page in site.pages:
        tab.clear()
        resp = tab.page.goto(site.url(page), wait_until='load', timeout=30_000)
        found = ([] if resp and resp.status == 200 else [f'HTTP {resp and resp.status}']) + tab.errors
        found += [f'external request: {u}' for u in tab.external]
        if found: problems[page.relative_to(site.root).as_posix()] = found
    print(f'{len(site.pages)} pages checked')
    assert len(site.pages) >= len(LESSONS) + 1, [p.name for p in site.pages]
    assert not problems, '\n'.join(f'{k}: {v}' for k, v in problems.items())


def test_home_page_links_every_lesson(site, new_tab):
    tab = new_tab()
    tab.page.goto(site.base + 'index.html', wait_until='load')
    links = {h.split('#')[0] for h in tab.page.eval_on_selector_all('a[href]', 'els => els.map(a => a.href)')}
    missing = [nb.name for nb in LESSONS if site.url(lesson_page(site, nb)) not in links]
    assert len(LESSONS) >= 13 and not missing, f'the home page does not link to the pages of {missing}'


@pytest.mark.parametrize('nb', LESSONS, ids=lambda nb: nb.stem)
def test_lesson_page_shows_a_figure(site, new_tab, nb):
    tab = new_tab()
    tab.page.goto(site.url(lesson_page(site, nb)), wait_until='load')
    imgs = images(tab.page)
    broken = [src for src, done, width in imgs if width == 0]
    assert not broken, f'{nb.stem}: images that did not load: {broken}'
    assert notebook_has_png(nb), f'{nb.name} has no saved figure: run `make outputs ONLY={nb.stem}`'
    assert imgs, f'{nb.stem}: the page shows no figure (no <img> in its content), though {nb.name} has an image output'


def test_lesson_09_formula_renders_as_math(site, new_tab):
    nb = next(nb for nb in LESSONS if nb.stem.startswith('09_'))
    tab = new_tab()
    tab.page.goto(site.url(lesson_page(site, nb)), wait_until='load')
    text = tab.page.inner_text('body')
    assert '$$' not in text and '\\mathrm' not in text, f'{nb.stem}: the page shows LaTeX source instead of math'
    maths = tab.page.locator('math, svg[class*=math], mjx-container')
    assert maths.count(), f'{nb.stem}: no <math> element (nor an SVG formula) on the page'
    ece = [i for i in range(maths.count()) if 'ECE' in ''.join(maths.nth(i).text_content().split())]
    assert ece, f'{nb.stem}: no formula mentions ECE'
    formula = maths.nth(ece[0])
    box = formula.bounding_box()
    assert formula.is_visible() and box and box['width'] > 20 and box['height'] > 5, f'ECE formula not visible: {box}'


# ---------------------------------------------------------------------------- the explorer in JupyterLab

@pytest.fixture(scope='module')
def lab(tmp_path_factory):
    "JupyterLab on 127.0.0.1 over a copy of tests/fixtures/explorer.ipynb, with a live front end for the kernel."
    tmp = tmp_path_factory.mktemp('lab')
    nbdir, cfgdir = tmp/'nbs', tmp/'config'
    nbdir.mkdir(); cfgdir.mkdir()
    shutil.copy(ROOT/'tests'/'fixtures'/'explorer.ipynb', nbdir/'explorer.ipynb')
    # no announcements feed, no update check: nothing for the server or the page to fetch from the internet
    never = 'jupyterlab.handlers.announcements.NeverCheckForUpdate'
    config = {'LabApp': {'news_url': None, 'check_for_updates_class': never}}
    (cfgdir/'jupyter_server_config.json').write_text(json.dumps(config))
    # private config, data, settings and workspace folders: the user's own neither change the test nor get written;
    # has_frontend() is False under tests (IN_TEST, PYTEST_CURRENT_TEST) and the inline backend needs MPLBACKEND unset
    drop = ('IN_TEST', 'PYTEST_CURRENT_TEST', 'PYTEST_XDIST_WORKER', 'MPLBACKEND')
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(JUPYTER_CONFIG_DIR=str(cfgdir), JUPYTER_RUNTIME_DIR=str(tmp/'runtime'), JUPYTER_DATA_DIR=str(tmp/'data'),
               JUPYTERLAB_SETTINGS_DIR=str(tmp/'settings'), JUPYTERLAB_WORKSPACES_DIR=str(tmp/'workspaces'),
               IPYTHONDIR=str(tmp/'ipython'), OMP_NUM_THREADS='1')
    token, port = 'browser-test-token', free_port()
    cmd = [str(BIN/'jupyter'), 'lab', '--no-browser', '--ip', '127.0.0.1', '--port', str(port),
           f'--ServerApp.token={token}', '--allow-root', f'--notebook-dir={nbdir}']
    log = (tmp/'server.log').open('w')
    with process_group(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=nbdir) as proc:
        base = f'http://127.0.0.1:{port}'
        wait_http(f'{base}/api/status?token={token}', proc, 90, 'jupyter lab')
        yield dict(base=base, token=token, log=tmp/'server.log')
    log.close()


PICTURE = '.widget-output img, .jupyter-widgets-output-area img' # the figure inside the explorer's Output widget


def test_explorer_redraws_when_a_slider_moves(lab, new_tab, tmp_path):
    tab = new_tab(viewport={'width': 1400, 'height': 1000})
    page = tab.page
    log = lambda: lab['log'].read_text()[-2000:]  # noqa: E731
    url = f"{lab['base']}/lab/tree/explorer.ipynb?token={lab['token']}"
    page.goto(url, wait_until='domcontentloaded', timeout=60_000)
    page.wait_for_selector('.jp-NotebookPanel .jp-CodeCell', timeout=60_000)
    try: page.get_by_text(re.compile(r'\| Idle$')).first.wait_for(timeout=90_000) # the kernel status in the status bar
    except Exception: pytest.fail(f'the kernel was not idle within 90 s; server log: {log()}')
    prompt = page.locator('.jp-CodeCell .jp-InputPrompt').first
    for _ in range(3): # a click while the page is still wiring up the kernel can be lost: try again
        page.get_by_role('menuitem', name='Run', exact=True).click()
        page.get_by_role('menuitem', name='Run All Cells', exact=True).click()
        try:
            page.wait_for_function('p => /\\[(\\*|\\d+)\\]/.test(p.textContent)', arg=prompt.element_handle(),
                                   timeout=15_000)
            break
        except Exception: page.keyboard.press('Escape')
    else: pytest.fail(f'Run > Run All Cells did not start the cells; first prompt: {prompt.text_content()!r}')
    as_text = '.widget-output .jp-OutputArea-output:has-text("<Figure size")' # a figure IPython could not draw as PNG
    try: page.locator(f'{PICTURE}, {as_text}').first.wait_for(state='visible', timeout=120_000)
    except Exception:
        outputs = page.locator('.jp-OutputArea-output').all_inner_texts()
        pytest.fail(f'the explorer showed no picture within 120 s; last outputs: {outputs[-3:]}; server log: {log()}')
    img = page.locator(PICTURE).first
    assert img.count(), f'the explorer shows its figure as text: {page.locator(as_text).first.inner_text()!r}'
    assert page.locator('.widget-slider, .widget-hslider').count() >= 5, 'the explorer has no sliders'
    img.scroll_into_view_if_needed()
    img.screenshot(path=tmp_path/'before.png')
    before = img.get_attribute('src')
    assert before and img.evaluate('i => i.naturalWidth') > 0, 'the explorer picture did not load'
    slider = page.locator('.widget-hslider', has=page.locator('label', has_text='max_rotate')).first
    readout = slider.locator('.widget-readout')
    old = readout.inner_text()
    readout.click()
    page.keyboard.press('Control+A')
    page.keyboard.type('45')
    page.keyboard.press('Enter')
    try:
        page.wait_for_function('([sel, src]) => { const i = document.querySelector(sel); return i && i.src !== src; }',
                               arg=[PICTURE, before], timeout=20_000)
    except Exception:
        pytest.fail(f'max_rotate moved from {old} to {readout.inner_text()} but the picture did not change within 20 s')
    page.locator(PICTURE).first.screenshot(path=tmp_path/'after.png')
    assert (tmp_path/'before.png').read_bytes() != (tmp_path/'after.png').read_bytes()
    assert not tab.external, f'JupyterLab asked the network for {tab.external}'


# ---------------------------------------------------------------------------- a run's report.html

REPORT_SECTIONS = ('Learning curves', 'Diagnosis', 'Confusion matrix', 'Per-class metrics', 'Calibration',
                   'Validation predictions', 'Grad-CAM', 'All metrics')
FIGURE_SECTIONS = ('Learning curves', 'Confusion matrix', 'Calibration', 'Validation predictions', 'Grad-CAM')


@pytest.fixture(scope='module')
def report(tmp_path_factory):
    "report.html of a tiny CLI fit on the embedded digits (4 per class, 32 px, 1+1 epochs)."
    out = tmp_path_factory.mktemp('run')/'run'
    exe = shutil.which('finetune-course', path=str(BIN)) or 'finetune-course'
    args = ['fit', 'digits', '--n-per-class', '4', '--size', '32', '--epochs', '1', '--freeze-epochs', '1', '--bs', '8',
            '--out', str(out), '--no-checkpoint']
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    res = subprocess.run([exe, *args], capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return out/'report.html'


def test_report_renders_every_section_with_images(report, new_tab):
    tab = new_tab()
    tab.page.goto(report.as_uri(), wait_until='load')
    headings = tab.page.eval_on_selector_all('section > h2', 'hs => hs.map(h => h.textContent.trim())')
    assert [h for h in REPORT_SECTIONS if h not in headings] == [], f'sections missing from report.html: {headings}'
    imgs = images(tab.page)
    assert imgs and all(w > 0 for _, _, w in imgs), f'images that did not load: {imgs}'
    for title in FIGURE_SECTIONS:
        pictures = tab.page.locator('section', has=tab.page.locator('h2', has_text=title)).locator('img')
        shown = pictures.count() and pictures.first.evaluate('i => i.naturalWidth') > 0
        assert shown, f'section {title!r} shows no picture'
    assert 'could not draw this section' not in tab.page.inner_text('body')
    assert not tab.errors, tab.errors
    assert not tab.external, f'report.html asked the network for {tab.external}'
