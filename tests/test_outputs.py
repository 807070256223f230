"""The lessons are committed with their outputs (`make outputs`): up to date with their code, small, with a figure each,
and free of warnings, progress bars and paths of the machine that ran them."""
import importlib.util
import json
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location('save_outputs', ROOT/'tools'/'save_outputs.py')
save_outputs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(save_outputs)
NOTEBOOKS = save_outputs.notebooks()
LESSONS = [p for p in NOTEBOOKS if p.parent.name == 'lessons']
# where a run could leak the machine it ran on: absolute paths under these roots
MACHINE_PATH = re.compile(r'(?<![\w.])/(?:work|root|home|tmp|var/folders|Users)/')


def outputs(path):
    "Every saved output of the notebook's code cells, with the cell's index."
    nb = json.loads(path.read_text())
    return [(i, o) for i, c in enumerate(nb['cells']) if c['cell_type'] == 'code' for o in c.get('outputs', [])]


@pytest.mark.parametrize('nb', NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_saved_outputs_are_up_to_date(nb):
    problem = save_outputs.stale(nb)
    assert problem is None, problem


def test_a_changed_code_cell_makes_outputs_stale(tmp_path):
    copy = tmp_path/LESSONS[0].name
    shutil.copy(LESSONS[0], copy)
    assert save_outputs.stale(copy) is None
    nb = json.loads(copy.read_text())
    cell = next(c for c in nb['cells'] if c['cell_type'] == 'code')
    cell['source'] = [*cell['source'], '\nx = 1']
    copy.write_text(json.dumps(nb))
    assert 'make outputs' in save_outputs.stale(copy) and LESSONS[0].stem in save_outputs.stale(copy)
    nb['metadata'].pop('ftc_outputs')
    copy.write_text(json.dumps(nb))
    assert 'has no saved outputs' in save_outputs.stale(copy)


@pytest.mark.parametrize('nb', LESSONS, ids=[p.stem for p in LESSONS])
def test_lesson_shows_a_figure_and_nothing_it_should_not(nb):
    outs = outputs(nb)
    figure = lambda o: 'image/png' in o.get('data', {}) or 'src="data:image/png' in ''.join(o.get('data', {}).get('text/html', ''))
    assert any(figure(o) for _, o in outs), f'{nb.name}: no saved figure (run `make outputs`)'
    for i, o in outs:
        assert not (o['output_type'] == 'stream' and o.get('name') == 'stderr'), f'{nb.name} cell {i}: a warning was saved'
        assert o['output_type'] != 'error', f'{nb.name} cell {i}: an error was saved'
        text = ''.join(o.get('text', '')) + ''.join(''.join(v) for k, v in o.get('data', {}).items() if k.startswith('text/'))
        assert '<progress' not in text and not save_outputs.PROGRESS_BAR.search(text), f'{nb.name} cell {i}: a progress bar was saved'
        assert not MACHINE_PATH.search(text), f'{nb.name} cell {i}: a path of the machine: {MACHINE_PATH.search(text)[0]}...'


def test_progress_bars_are_dropped_and_results_kept():
    bar = ('█\repoch  train_loss\n█\r\rEpoch 1/1 : |----| 0.00% [0/2 00:00<?]\rEpoch 1/1 : |██--| 50.00% [1/2 00:00<00:01]'
           '\r0      0.807     \n |----| 0.00% [0/6 00:00<?]\r\n')
    assert save_outputs._unbar(bar) == 'epoch  train_loss\n0      0.807     \n'


def test_sizes():
    assert save_outputs.sizes() == []


def test_shrink_png_keeps_the_picture():
    "Re-encoding a figure keeps its size in pixels and its look (here: a red square on white)."
    import base64
    import io
    from PIL import Image
    img = Image.new('RGBA', (40, 30), (255, 255, 255, 255))
    img.paste((200, 0, 0, 255), (10, 10, 20, 20))
    buf = io.BytesIO(); img.save(buf, 'PNG')
    small = Image.open(io.BytesIO(base64.b64decode(save_outputs.shrink_png(base64.b64encode(buf.getvalue()).decode()))))
    assert small.size == (40, 30)
    assert small.convert('RGB').getpixel((15, 15)) == (200, 0, 0) and small.convert('RGB').getpixel((0, 0)) == (255, 255, 255)
