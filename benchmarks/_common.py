"""What the benchmark scripts share: the data folder, the optional lock, the lm-eval interpreter, CMMLU task files.

Every machine-specific location is an option or an environment variable, never a built-in path:

  $LUOPAN_DATA            the benchmark data (default ../shared/datasets beside the repository, the project's layout)
  --lock PATH             hold an exclusive flock on PATH for the whole run, so benchmarks started together take
  $LUOPAN_BENCH_LOCK      turns instead of sharing the cores (default: no lock)
  --lmeval-python PATH    a Python interpreter with lm-eval installed, e.g. <venv>/bin/python; lm-eval runs as
  $LUOPAN_LMEVAL_PYTHON   ``PATH -m lm_eval`` and its task definitions are read from that installation
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parents[1]
CMMLU_SUBJECTS = REPO / "plugins" / "luopan_mcq" / "subjects" / "cmmlu.json"

#: the --help epilog of every script: the environment it reads
EPILOG = ("environment: LUOPAN_DATA (the data folder; default ../shared/datasets beside the repository), "
          "LUOPAN_BENCH_LOCK (default of --lock), LUOPAN_LMEVAL_PYTHON (default of --lmeval-python, where taken)")

_held: list[IO[str]] = []  # open lock files, kept until the process exits


def sh(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    """Run ``cmd``; its wall time and stdout, or exit with its output when it fails."""
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}")
    return dt, r.stdout


def data_dir() -> Path:
    """The first folder of ``$LUOPAN_DATA`` (default ``../shared/datasets`` beside the repository)."""
    env = os.environ.get("LUOPAN_DATA")
    return Path(env.split(os.pathsep)[0] if env else REPO.parent / "shared" / "datasets").resolve()


def add_lock_option(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--lock", metavar="PATH", default=os.environ.get("LUOPAN_BENCH_LOCK") or None,
                    help="hold an exclusive lock (flock) on PATH while measuring, so benchmarks started together "
                         "take turns (default: $LUOPAN_BENCH_LOCK, else no lock)")


def hold_lock(path: str | None) -> None:
    """Wait for an exclusive lock on ``path`` and keep it until the process exits; nothing when ``path`` is empty."""
    if not path:
        return
    fh = open(path, "a")  # held for the life of the process
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"waiting for the lock {path}", file=sys.stderr, flush=True)
        fcntl.flock(fh, fcntl.LOCK_EX)
    _held.append(fh)


def add_lmeval_option(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--lmeval-python", metavar="PATH", default=os.environ.get("LUOPAN_LMEVAL_PYTHON") or None,
                    help="a Python interpreter with lm-eval installed, e.g. <venv>/bin/python "
                         "(default: $LUOPAN_LMEVAL_PYTHON)")


def lmeval_python(args: argparse.Namespace) -> str:
    """The interpreter given by --lmeval-python / $LUOPAN_LMEVAL_PYTHON; exits with a one-line message without it."""
    py = args.lmeval_python
    if not py:
        sys.exit("lm-eval is needed: give --lmeval-python PATH (a Python with lm-eval installed) or set "
                 "LUOPAN_LMEVAL_PYTHON" + (", or pass --skip-lmeval" if hasattr(args, "skip_lmeval") else ""))
    if not Path(py).exists():
        sys.exit(f"--lmeval-python {py}: no such file")
    return py


def lmeval_cmd(py: str) -> list[str]:
    """The lm-eval command line of that interpreter (what its ``lm_eval`` script runs)."""
    return [py, "-m", "lm_eval"]


def lmeval_tasks_dir(py: str) -> Path:
    """The ``lm_eval/tasks`` folder of the lm-eval installed for ``py`` (found without importing lm_eval)."""
    code = "import importlib.util as u; print(list(u.find_spec('lm_eval').submodule_search_locations)[0])"
    r = subprocess.run([py, "-c", code], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{py} has no lm-eval: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}")
    return Path(r.stdout.strip()) / "tasks"


def write_cmmlu_tasks(out: Path, data: Path | None = None) -> list[str]:
    """lm-eval task YAMLs that read the CMMLU CSVs under ``data`` (default: $LUOPAN_DATA): one task per subject
    (``pb_cmmlu_<subject>``, lm-eval's CMMLU prompt) and the groups ``pb_cmmlu_all`` (67 subjects, 11,582
    questions) and ``pb_cmmlu_first5`` (the first 5 alphabetically, 806). Returns the subjects in order."""
    data = (data or data_dir()) / "cmmlu"
    out.mkdir(parents=True, exist_ok=True)
    subjects = json.loads(CMMLU_SUBJECTS.read_text(encoding="utf-8"))["names"]
    names = sorted(subjects)
    for s in names:
        (out / f"pb_cmmlu_{s}.yaml").write_text(f'''task: pb_cmmlu_{s}
dataset_path: csv
dataset_kwargs:
  data_files:
    test: {data}/test/{s}.csv
    dev: {data}/dev/{s}.csv
test_split: test
fewshot_split: dev
output_type: multiple_choice
description: "以下是关于{subjects[s]}的单项选择题，请直接给出正确答案的选项。\\n\\n"
doc_to_text: "{{{{Question}}}}\\nA. {{{{A}}}}\\nB. {{{{B}}}}\\nC. {{{{C}}}}\\nD. {{{{D}}}}\\n答案："
doc_to_choice: ["A", "B", "C", "D"]
doc_to_target: "{{{{['A', 'B', 'C', 'D'].index(Answer)}}}}"
target_delimiter: ""
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
''', encoding="utf-8")
    for group, tasks in (("pb_cmmlu_all", names), ("pb_cmmlu_first5", names[:5])):
        body = "\n".join(f"  - pb_cmmlu_{s}" for s in tasks)
        (out / f"{group}.yaml").write_text(f"group: {group}\ntask:\n{body}\naggregate_metric_list:\n  - metric: acc\n"
                                           f"    aggregation: mean\n    weight_by_size: true\nmetadata:\n  version: 1.0\n",
                                           encoding="utf-8")
    return names
