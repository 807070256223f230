"Shared helpers for benchmark scripts: where results go, what machine they ran on, paired differences over seeds."
import json
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent/'results'


def write_result(name: str, result: dict) -> Path:
    "Write `result` plus the machine's environment report to benchmarks/results/<name>.json."
    from finetune_course.config import environment_report, get_config
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = dict(benchmark=name, written=time.strftime('%Y-%m-%dT%H:%M:%S'), machine=environment_report(get_config()), **result)
    path = RESULTS/f'{name}.json'
    path.write_text(json.dumps(payload, indent=2, default=str))
    print(f'wrote {path}')
    return path


def paired(df, arm: str, a: str, b: str, column: str, index: str = 'seed', digits: int = 4) -> dict:
    "Mean over `index` (seeds) of `column` for arm `a` minus arm `b` (arms named in column `arm`), with its standard error."
    from finetune_course.config import paired_difference
    wide = df.pivot_table(index=index, columns=arm, values=column).dropna(subset=[a, b])
    return dict(a=a, b=b, column=column, **paired_difference(wide[a], wide[b], digits=digits))
