"Shared helpers for benchmark scripts: where results go and what machine they ran on."
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
