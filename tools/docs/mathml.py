"""Sphinx extension: render math (MyST `$...$` and `$$...$$`) as MathML with latex2mathml at build time.

Browsers display MathML natively, so a page needs no MathJax script and no network."""
from docutils import nodes
from latex2mathml.converter import convert
from sphinx.errors import ExtensionError
from sphinx.util import logging

logger = logging.getLogger(__name__)


def _mathml(self, node, display: bool) -> str:
    latex = node.astext()
    try: return convert(latex, display='block' if display else 'inline')
    except Exception as e:
        logger.warning(f'math {latex!r} cannot be converted to MathML: {type(e).__name__}: {e}', location=node)
        return self.encode(latex)


def visit_math(self, node):
    self.body.append(f'<span class="math">{_mathml(self, node, False)}</span>')
    raise nodes.SkipNode


def visit_math_block(self, node):
    if node.get('number'): self.body.append(f'<span class="eqno">({node["number"]})</span>')
    self.body.append(f'<div class="math">{_mathml(self, node, True)}</div>')
    raise nodes.SkipNode


def setup(app):
    try: app.add_html_math_renderer('mathml', (visit_math, None), (visit_math_block, None))
    except ExtensionError: pass
    app.config.html_math_renderer = 'mathml'
    return {'parallel_read_safe': True, 'parallel_write_safe': True}
