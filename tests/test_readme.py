"README.md is generated from nbs/index.ipynb and shows the two quick-start commands."
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_readme_matches_index_notebook():
    res = subprocess.run([sys.executable, str(ROOT/'tools'/'build_readme.py'), '--check'], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_readme_quick_start_has_the_two_commands():
    text = (ROOT/'README.md').read_text()
    quick = text.split('## Quick start', 1)[1].split('##', 1)[0]
    assert 'make demo' in quick and 'make test' in quick


def test_ci_calls_the_readme_test_command():
    assert 'make test' in (ROOT/'.ci'/'run').read_text()


def test_readme_python_example_imports():
    "The names the README's Python example imports exist in the library (its modules move in redesigns)."
    import importlib
    import re
    text = (ROOT/'README.md').read_text()
    found = re.findall(r'^from (finetune_course\.\w+) import (.+)$', text, re.M)
    assert found
    for module, names in found:
        mod = importlib.import_module(module)
        for name in (n.strip() for n in names.split(',')):
            assert hasattr(mod, name), f'README imports {name} from {module}, which has no such name'
