"""`finetune-course workshop-check` runs a real lesson headless, prints its row and writes workshop_check.json; an
unknown lesson number is one line with exit code 2."""
import json
from clirun import cli




def test_workshop_check_runs_lesson_00(tmp_path):
    res = cli('workshop-check', '--lessons', '0', cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    saved = json.loads((tmp_path/'workshop_check.json').read_text())
    (row,) = saved['lessons']
    assert (row['lesson'], row['passed'], saved['profile'], saved['failed']) == ('00_config', True, 'quick', [])
    assert row['seconds'] > 0 and row['peak_mb'] > 100, row  # torch alone takes more than 100 MB
    assert '00_config' in res.stdout and '1 of 1 lessons passed' in res.stdout


def test_unknown_lesson_is_one_line_exit_2(tmp_path):
    res = cli('workshop-check', '--lessons', '01,99', '--out', tmp_path)
    assert res.returncode == 2 and 'no lesson 99' in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
