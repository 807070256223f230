"""Sphinx configuration for `make docs` (tools/build_docs.py): the staged notebooks, rendered from their
saved outputs with myst-nb (never executed), the furo theme, math as MathML; nothing loaded from the network."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

project = 'finetune-course'
html_title = 'finetune-course'
extensions = ['myst_nb', 'mathml']
html_math_renderer = 'mathml'
nb_execution_mode = 'off' # pages show the outputs saved in the notebooks
nb_output_stderr = 'show'
myst_enable_extensions = ['dollarmath', 'amsmath', 'colon_fence', 'deflist', 'strikethrough', 'tasklist']
myst_dmath_double_inline = True
myst_heading_anchors = 3
suppress_warnings = ['myst.strikethrough']
source_suffix = {'.ipynb': 'myst-nb'}
master_doc = root_doc = 'index'
exclude_patterns = ['_build', '**/.ipynb_checkpoints']
html_theme = 'furo'
html_static_path = []
html_show_sourcelink = False
html_copy_source = False
html_last_updated_fmt = None
html_theme_options = {'navigation_with_keys': True}
