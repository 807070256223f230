"The command line in a fresh process, for tests: `cli(*args)` runs `finetune-course ARGS` with one math thread."
import os
import subprocess
import sys

ENV = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')


def cli(*args, pre='', cwd=None, timeout=900):
    "`finetune-course ARGS` in a fresh process; `pre` runs first (e.g. to hide a package); the `CompletedProcess`."
    code = f"import sys\n{pre}\nfrom finetune_course.cli import main\nsys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, '-c', code, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=ENV, cwd=cwd)
