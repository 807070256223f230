"Lesson 03's live BatchNorm claims under the quick and the full profile's settings, on CPU, with fewer images."
import json
import warnings
from pathlib import Path

import pytest

from finetune_course.config import get_config
from finetune_course.data import get_dataset, make_dls

LESSON = Path(__file__).resolve().parent.parent/'nbs'/'lessons'/'03_models.ipynb'
# the cells of "Checking the BatchNorm claim" that state and assert what holds in every profile (not the figure)
CLAIM_CELLS = ('bnr00002', 'bnr00003', 'b0e331f4', 'ac02bf7d', '4a7c2e19', '2a562df7', 'bnr00006', 'bnr00008')
# the full profile at 224 px on `shapes` (75 validation images, against digits' 360) and without the repeat fit
SETTINGS = {'quick': ('digits', dict(n_per_class=30), CLAIM_CELLS), 'full': ('shapes', dict(n_per_class=8), CLAIM_CELLS[:-1])}


def lesson_cells(ids):
    "The sources of the lesson's code cells `ids`, in the lesson's order."
    cells = {c.get('id'): ''.join(c['source']) for c in json.loads(LESSON.read_text())['cells'] if c['cell_type'] == 'code'}
    missing = [i for i in ids if i not in cells]
    assert not missing, f'lesson 03 lost the cells {missing}; update CLAIM_CELLS'
    return [cells[i] for i in ids]


@pytest.mark.slow
@pytest.mark.parametrize('profile', list(SETTINGS))
def test_bn_claims_hold(profile):
    warnings.filterwarnings('ignore', category=FutureWarning)
    cfg = get_config(profile, device='cpu')
    assert cfg.size == (64 if profile == 'quick' else 224)
    dataset, sizes, cells = SETTINGS[profile]
    dls = make_dls(get_dataset(dataset), cfg, **sizes)
    ns = dict(cfg=cfg, dls=dls)
    exec('\n'.join(['import pandas as pd, torch', 'from fastcore.test import test_eq',
                    'from finetune_course.config import set_seed',
                    'from finetune_course.models import BodyBNEval, body_bn_layers, head_bn_layers, make_learner']), ns)
    for i, source in zip(cells, lesson_cells(cells)):
        exec(compile(source, f'03_models.ipynb#{i}', 'exec'), ns)
    assert len(ns['drift'][False]) == cfg.freeze_epochs * len(dls.train)  # one value per optimizer step
