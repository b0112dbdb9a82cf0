"""The benchmark presets' prompts against lm-eval's own task definitions, read from an lm-eval installation.

tests/test_benchmarks_presets.py checks each preset's first item byte for byte against expected strings built
from the raw files by following lm-eval's task YAMLs; this script closes the loop with the YAMLs themselves
(what a test cannot do without lm-eval installed):

  truthfulqa  lm-eval's truthfulqa_mc1 / _mc2 ``doc_to_text`` (its 6-question primer), rendered with jinja2 as
              lm-eval renders it, equals the prompt of luopan's truthfulqa_mc1 and truthfulqa_mc2 presets
  bbh         for every task of lm-eval's bbh/cot_fewshot: its description and its 3 exemplars equal what the
              bench loader parses from the cot-prompts file luopan reads
  gsm8k_cot   lm-eval's gsm8k-cot.yaml: its 8 exemplars are the preset's few-shot rows, the few-shot block luopan
              builds is those exemplars in lm-eval's "Q: ...\\nA: ...\\n\\n" form, and the strict-match and
              flexible-extract filters' regexes are the preset's patterns

Prints a table and exits 1 if anything differs (the first differences are printed below the table).

Usage: python benchmarks/lmeval_task_parity.py (--lmeval-tasks DIR | --lmeval-python PATH)

  --lmeval-tasks DIR    an ``lm_eval/tasks`` folder; lm-eval need not be installed, its wheel unpacked will do:
                        pip download --no-deps lm-eval==0.4.13 -d /tmp/w && python -m zipfile -e
                        /tmp/w/lm_eval-0.4.13-py3-none-any.whl /tmp/lm && ... --lmeval-tasks /tmp/lm/lm_eval/tasks
  --lmeval-python PATH  a Python with lm-eval installed (default: $LUOPAN_LMEVAL_PYTHON); its tasks folder is used
  $LUOPAN_DATA          the data folder (default ../shared/datasets beside the repository)
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path
from typing import Any

import yaml
from _common import EPILOG, add_lmeval_option, data_dir, lmeval_python, lmeval_tasks_dir
from jinja2 import BaseLoader, Environment, StrictUndefined

from luopan.plugins import load_registry


class _TaskLoader(yaml.SafeLoader):
    """YAML as lm-eval's task files write it: ``!function module.name`` kept as its text."""


_TaskLoader.add_constructor("!function", lambda loader, node: f"!function {loader.construct_scalar(node)}")


def task_file(path: Path) -> dict[str, Any]:
    return yaml.load(path.read_text(encoding="utf-8"), _TaskLoader)  # a SafeLoader subclass


# how lm-eval renders doc_to_text (lm_eval/utils.py: env, apply_template)
JINJA = Environment(loader=BaseLoader(), undefined=StrictUndefined, keep_trailing_newline=True)


def first_samples(reg: Any, name: str) -> tuple[list[Any], dict[str, Any]]:
    fields = reg.presets["dataset"][name].fields
    ds = reg.get("dataset", fields["loader"]).build(fields["params"])
    return ds.load(ds.subsets()[0], shots=fields.get("shots", 0)), fields


def check_truthfulqa(reg: Any, lm: Path, data: Path) -> tuple[int, list[str]]:
    with open(data / "truthfulqa" / "TruthfulQA.csv", encoding="utf-8", newline="") as fh:
        # stripped, as the bench loader rebuilds the rows of mc_task.json (lm-eval's source) from the CSV
        questions = [r["Question"].strip() for r in csv.DictReader(fh)]
    differ: list[str] = []
    n = 0
    for variant in ("mc1", "mc2"):
        task = task_file(lm / "truthfulqa" / f"truthfulqa_{variant}.yaml")
        if "doc_to_text" not in task:  # truthfulqa_mc2.yaml includes mc1's definition
            task = {**task_file(lm / "truthfulqa" / task["include"]), **task}
        template = JINJA.from_string(task["doc_to_text"])
        samples, _ = first_samples(reg, f"truthfulqa_{variant}")
        if len(samples) != len(questions):
            differ.append(f"truthfulqa_{variant}: {len(samples)} samples, {len(questions)} questions in the file")
        for s, q in zip(samples, questions):
            n += 1
            expected = template.render(question=q)
            if s.prompt != expected:
                differ.append(f"truthfulqa_{variant} {s.id}: luopan {s.prompt[-120:]!r} / lm-eval {expected[-120:]!r}")
    return n, differ


def check_bbh(lm: Path, data: Path) -> tuple[int, list[str]]:
    from luopan_bench.sources import parse_cot_prompt

    differ: list[str] = []
    files = sorted((lm / "bbh" / "cot_fewshot").glob("[a-z]*.yaml"))
    for f in files:
        task = task_file(f)
        description, examples = parse_cot_prompt(data / "bbh" / "cot-prompts" / f"{f.stem}.txt")
        if task["description"] != description + "\n\n":
            differ.append(f"bbh {f.stem}: description {description!r} / lm-eval {task['description']!r}")
        if task["fewshot_config"]["samples"] != examples:
            differ.append(f"bbh {f.stem}: the exemplars differ")
    if len(files) != 27:
        differ.append(f"bbh: lm-eval has {len(files)} cot_fewshot tasks, luopan's preset 27")
    return len(files), differ


def check_gsm8k_cot(reg: Any, lm: Path) -> tuple[int, list[str]]:
    differ: list[str] = []
    task = task_file(lm / "gsm8k" / "gsm8k-cot.yaml")
    fields = reg.presets["dataset"]["gsm8k_cot"].fields
    shots = task["fewshot_config"]["samples"]
    if fields["params"]["fewshot_rows"] != shots:
        differ.append("gsm8k_cot: the preset's few-shot rows are not lm-eval's exemplars")
    block = "".join(f"Q: {x['question']}\nA: {x['target']}\n\n" for x in shots)
    samples, _ = first_samples(reg, "gsm8k_cot")
    if samples[0].prefix != block:
        differ.append(f"gsm8k_cot: few-shot block {samples[0].prefix[:80]!r}... / lm-eval {block[:80]!r}...")
    flt = {f["name"]: f["filter"][0] for f in task["filter_list"]}
    for ours, theirs in (("strict_pattern", "strict-match"), ("flexible_pattern", "flexible-extract")):
        if fields["evaluator_params"][ours] != flt[theirs]["regex_pattern"]:
            differ.append(f"gsm8k_cot {theirs}: {fields['evaluator_params'][ours]!r} / lm-eval "
                          f"{flt[theirs]['regex_pattern']!r}")
    return len(shots) + 3, differ


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=EPILOG)
    ap.add_argument("--lmeval-tasks", type=Path, metavar="DIR",
                    help="an lm_eval/tasks folder (an installed or unpacked lm-eval); else from --lmeval-python")
    add_lmeval_option(ap)
    args = ap.parse_args()
    lm = args.lmeval_tasks or lmeval_tasks_dir(lmeval_python(args))
    if not (lm / "gsm8k" / "gsm8k-cot.yaml").is_file():
        sys.exit(f"{lm}: not an lm_eval/tasks folder (no gsm8k/gsm8k-cot.yaml)")
    os.environ.setdefault("LUOPAN_DATA", str(data_dir()))
    data = data_dir()
    reg = load_registry()
    rows = [("truthfulqa", "prompts (mc1 + mc2, every question)", *check_truthfulqa(reg, lm, data)),
            ("bbh", "cot_fewshot tasks (description + exemplars)", *check_bbh(lm, data)),
            ("gsm8k_cot", "exemplars + few-shot block + 2 filters", *check_gsm8k_cot(reg, lm))]
    print(f"lm-eval tasks: {lm}\n")
    print(f"| {'check':<10} | {'compared':<44} | {'n':>5} | result |")
    print(f"|{'-' * 12}|{'-' * 46}|{'-' * 7}|--------|")
    for name, what, n, differ in rows:
        print(f"| {name:<10} | {what:<44} | {n:>5} | {'same' if not differ else f'{len(differ)} differ'} |")
    failures = [d for *_, differ in rows for d in differ]
    for d in failures[:20]:
        print("  " + d)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
