"Unit tests of finetune_course.report: the page is self-contained, text is escaped, sections never sink the report."
import base64
import io

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
import pandas as pd
from PIL import Image

from finetune_course.report import (KEY_METRICS, external_resources, fig_to_data_uri, figure_section,
                                    prediction_grid_figure, render_report, table_section, text_section, write_report)


def small_figure():
    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.plot([3, 2, 1])
    return fig


def test_external_resources_from_the_library():
    "Called from the installed module (it once raised NameError: `re` was imported only in a hidden notebook cell)."
    clean = '<html><head><style>b{}</style></head><body><img src="data:image/png;base64,AAAA"><a href="#top">up</a></body></html>'
    assert external_resources(clean) == []
    page = ('<html><head><link rel="stylesheet" href="https://cdn.example.com/style.css">'
            "<script src='https://cdn.example.com/app.js'></script></head>"
            '<body><img src = "logo.png"><a href="#x">x</a></body></html>')
    assert external_resources(page) == ['https://cdn.example.com/style.css', 'https://cdn.example.com/app.js', 'logo.png']


def test_fig_to_data_uri_is_a_small_png_and_closes_the_figure():
    fig = small_figure()
    uri = fig_to_data_uri(fig)
    png = base64.b64decode(uri.split(',', 1)[1])
    assert uri.startswith('data:image/png;base64,') and Image.open(io.BytesIO(png)).format == 'PNG'
    assert len(png) < 30_000 and not plt.fignum_exists(fig.number)


def test_written_report_is_self_contained_and_escaped(tmp_path):
    metrics = dict(valid_accuracy=0.96512, n_train=40, backbone='<script>alert(1)</script>', extra='not a key metric')
    sections = [figure_section('Curves', small_figure(), 'per <epoch>'),
                table_section('Per class', pd.DataFrame({'recall': [0.5]}, index=['<i>cat</i>'])),
                text_section('Notes', ['small data', '<b>64 px</b>'])]
    path = write_report(tmp_path/'run', metrics, sections)
    page = path.read_text(encoding='utf-8')
    assert path.name == 'report.html' and external_resources(page) == []
    assert '<script>' not in page and '&lt;script&gt;' in page and '&lt;i&gt;cat&lt;/i&gt;' in page
    assert '<b>0.9651</b>' in page and page.count('data:image/png;base64,') == 1
    assert page.index('Curves') < page.index('Per class') < page.index('Notes') < page.index('All metrics')
    assert 'extra' not in KEY_METRICS and 'not a key metric' in page  # in the folded metrics.json only


def test_text_section_forms():
    assert text_section('t', ['a', 'b']).body == '<ul><li>a</li><li>b</li></ul>'
    assert text_section('t', ['a'], bullets=False).body == '<p>a</p>'
    assert render_report({}, []).startswith('<!doctype html>')


def test_prediction_grid_marks_wrong_predictions():
    imgs = [Image.new('RGB', (8, 8), c) for c in ('red', 'green', 'blue')]
    fig = prediction_grid_figure(imgs, ['a', 'b', 'a'], ['a', 'a', 'a'], [0.9, 0.6, 0.7], ncols=2)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ['a (0.90)', 'a (0.60)\ntrue: b', 'a (0.70)']
    plt.close(fig)


def test_grids_show_the_errors_of_a_weak_model():
    "An untrained head makes errors: the prediction grid (and so the Grad-CAM grid) shows them first, over several classes."
    from pathlib import Path
    import numpy as np
    from finetune_course.config import get_config, set_seed
    from finetune_course.data import make_dls
    from finetune_course.interpret import Interpretation
    from finetune_course.models import make_learner
    from finetune_course.report import _grid_from_interp, _picks
    cfg = get_config('quick', 'cpu')
    set_seed(0)
    learn = make_learner(make_dls(Path(__file__).parent.parent/'data'/'shapes-mini', cfg, size=32, bs=8), pretrained=False, cfg=cfg)
    interp = Interpretation.from_learner(learn)
    targets, preds = np.asarray(interp.targets), np.asarray(interp.preds)
    wrong = int((targets != preds).sum())
    assert wrong > 0, 'the untrained model made no error: choose a weaker one'
    picks = _picks(interp, 8)
    n_wrong_shown = min(wrong, 4) # up to half the grid while right ones exist; more when there are too few right ones
    assert all(targets[i] != preds[i] for i in picks[:n_wrong_shown]) # the errors come first
    fig = _grid_from_interp(interp, 8)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert sum('true:' in t for t in titles) >= n_wrong_shown and 'true:' in titles[0]
    assert len(set(targets[picks])) > 1 # more than one class
    plt.close(fig)
