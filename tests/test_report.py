"""report.html: written after every run and by ``luopan report``; self-contained (no http(s) resource), per-unit
sample files beside it that parse, hostile text from models and datasets inert in every file written."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

import luopan_report
from luopan import Backend, hookimpl
from luopan.types import GenerationResult

#: text a model or a dataset could contain, meant to run in the reader's browser
HOSTILE = ("</script><script>alert(1)</script>", "<img src=x onerror=alert(1)>",
           "[click](javascript:alert(1)) <a href=\"javascript:alert(1)\">x</a>", "\u2028\u2029&amp;")
#: how any of it would look if it were written unescaped (escaped, as in the page's text, it is inert)
RAW_FORBIDDEN = ("<script>alert(1)", "</script><script>", "<img src=x", "<a href=\"javascript:")


class HostileBackend(Backend):
    """A chat model whose every answer is hostile: a <think> part, markup, script, and a 1 MB line."""

    kind = "chat"

    def identity(self) -> dict[str, Any]:
        return {"backend": "hostile", "version": 1}

    def loglikelihood(self, requests):  # pragma: no cover - chat only
        raise NotImplementedError

    def generate(self, requests: Sequence[Any]) -> list[GenerationResult]:
        out = []
        for i, _ in enumerate(requests):
            text = ("<think>I will inject " + HOSTILE[0] + "</think>" + " ".join(HOSTILE)
                    + (" " + "x" * 1_000_000 if i == 0 else "") + " The answer is B")
            out.append(GenerationResult(text, 1, len(text), "stop"))
        return out


class HostilePlugin:
    @staticmethod
    @hookimpl
    def luopan_register_backends(register):
        register("hostile", HostileBackend, description="hostile outputs (report tests)")


def registry(*extra: tuple[str, object]):
    """The installed plugins plus the toy dataset and the report plugin (unless it is installed already)."""
    import toy_plugin

    from luopan.plugins import load_registry

    reg = load_registry(extra_plugins=[("toy", toy_plugin), *extra])
    if not any(p.name == "report" and p.ok for p in reg.plugins):
        reg = load_registry(extra_plugins=[("toy", toy_plugin), ("report", luopan_report), *extra])
    return reg


@pytest.fixture
def report_registry():
    from luopan.plugins import reset_registry

    reg = registry(("hostile_backend", HostilePlugin))
    reset_registry(reg)
    yield reg
    reset_registry(None)


def run_file(tmp: Path, models: str, *, template: str = "Q{i} of {s}: pick one.\nAnswer:") -> Path:
    cfg = tmp / "r.yaml"
    cfg.write_text(f"run: {{name: r1, output_dir: {tmp / 'outputs'}}}\n"
                   f"models:\n{models}"
                   "datasets:\n"
                   f"  - {{loader: toy, params: {{subsets: 4, per_subset: 6, template: {json.dumps(template)}}}}}\n",
                   encoding="utf-8")
    return cfg


def payload(js: Path) -> dict[str, Any]:
    """The JSON a per-unit sample file passes to ``window.__luopan_samples_load(key, data)``."""
    text = js.read_text(encoding="utf-8")
    m = re.fullmatch(r'window\.__luopan_samples_load\((".*?"), (\{.*\})\);\n', text, re.S)
    assert m, text[:200]
    data = json.loads(m.group(2))
    assert json.loads(m.group(1)) == data["unit"]
    return data


def samples(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows with their prompts whole again (the shared prefix put back)."""
    return [{**r, "prompt": (data["prefixes"][r["pp"]] if r["pp"] >= 0 else "") + r["p"]} for r in data["rows"]]


def test_report_is_written_after_a_run_and_rebuilt_by_luopan_report(tmp_path, report_registry, capsys):
    from luopan.cli import main

    cfg = run_file(tmp_path, "  - {backend: fake}\n  - {name: fake7, backend: fake, params: {seed: 7}}\n",
                   template="Example shots. " * 10 + "\n\nQ{i} of {s}: pick one.\nAnswer:")
    assert main(["run", str(cfg), "--no-progress"]) == 0
    out = tmp_path / "outputs" / "r1"
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "<table" in html and "Leaderboard" in html and "fake7" in html
    assert not re.search(r"https?://", html), "the page must reference nothing on the network"
    units = {}
    for js in sorted((out / "report").rglob("*.js")):
        data = payload(js)
        units[data["unit"]] = data
        assert not re.search(r"https?://", js.read_text(encoding="utf-8"))
    assert set(units) == {"fake/toy", "fake7/toy"}
    rows = samples(units["fake/toy"])
    preds = [json.loads(x) for x in (out / "predictions/fake/toy.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [p["id"] for p in preds]
    assert [r["prompt"] for r in rows] == [p["prompt"] for p in preds]  # folded prefix + rest = the prompt
    assert any(r["pp"] >= 0 for r in rows)  # the shared part is stored once
    assert {r["st"] for r in rows} <= {"right", "wrong", "unparsed", "failed"}
    assert all(len(r["lp"]) == 4 and r["ch"] for r in rows)  # per-option log-likelihoods
    right = sum(p["score"] for p in preds)
    assert sum(r["st"] == "right" for r in rows) == right

    (out / "report.html").unlink()
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    assert f"written: {out / 'report.html'}" in capsys.readouterr().out
    assert (out / "report.html").read_text(encoding="utf-8") == html  # the same page, from the folder alone


def test_hostile_text_is_inert_in_every_file(tmp_path, report_registry):
    from luopan.cli import main

    template = "Q{i} " + " ".join(HOSTILE) + " of {s}\nAnswer:"
    cfg = run_file(tmp_path, "  - {name: evil, backend: hostile, kind: chat}\n  - {backend: fake}\n",
                   template=template)
    assert main(["run", str(cfg), "--no-progress"]) == 0
    out = tmp_path / "outputs" / "r1"
    files = [out / "report.html", *sorted((out / "report").rglob("*.js"))]
    assert len(files) == 3
    for f in files:
        text = f.read_text(encoding="utf-8")
        for bad in RAW_FORBIDDEN:
            assert bad not in text, f"{f.name}: {bad!r} written raw"
        if f.suffix == ".js":  # JSON in a script: line separators would end a string in older engines
            assert "\u2028" not in text and "\u2029" not in text
        assert "innerHTML" not in text and "insertAdjacentHTML" not in text and "document.write" not in text
    evil = payload(out / "report/evil/toy.js")
    rows = samples(evil)
    assert all(HOSTILE[0] in r["o"] and HOSTILE[1] in r["o"] for r in rows)  # the text is all there, as data
    assert all(HOSTILE[1] in r["prompt"] for r in rows)
    assert max(len(r["o"]) for r in rows) > 1_000_000
    js = (out / "report/evil/toy.js").read_text(encoding="utf-8")
    assert "\\u003c/script\\u003e\\u003cscript\\u003ealert(1)" in js and "\\u2028" in js


def test_failed_samples_unparsed_answers_and_a_failed_unit_are_shown(tmp_path):
    """A folder written by hand as a run writes it: a unit whose requests partly failed (no predictions, the
    failed items listed), a unit with an answer that could not be parsed; rebuilt with luopan.rebuild_reports."""
    from luopan import rebuild_reports

    out = tmp_path / "run"
    (out / "results/api").mkdir(parents=True)
    (out / "results/local").mkdir(parents=True)
    (out / "predictions/local").mkdir(parents=True)
    (out / "results/api/qa.json").write_text(json.dumps({
        "model": "api", "dataset": "qa", "metric": "accuracy", "subsets": [], "error": "2 of 3 samples failed",
        "failed_items": [{"id": "a/0", "subset": "a", "error": "HTTP 500 <b>boom</b>"},
                         {"id": "a/1", "subset": "a", "error": "timeout"}]}))
    (out / "results/local/qa.json").write_text(json.dumps({
        "model": "local", "dataset": "qa", "metric": "accuracy", "error": None, "failed_items": [],
        "subsets": [{"subset": "a", "n": 3, "score": 1 / 3, "metrics": {},
                     "stats": {"score": {"n": 3, "se": 0.33, "ci": [-0.1, 0.9], "method": "mean", "sd": 0.57}}}]}))
    recs = [{"id": "a/0", "subset": "a", "prompt": "Q0", "target": "x", "output": "<think>hm</think>x",
             "prediction": "x", "score": 1.0},
            {"id": "a/1", "subset": "a", "prompt": "Q1", "target": "y", "output": "no idea", "prediction": None,
             "score": 0.0, "extra": {"parsed": 0.0}},
            {"id": "a/2", "subset": "a", "prompt": "Q2", "target": "z", "output": "w", "prediction": "w",
             "score": 0.0, "extra": {"status": "failed", "reason": "AssertionError in test 2", "sandbox": "namespaces"}}]
    (out / "predictions/local/qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert rebuild_reports(out, registry()) == [out / "report.html"]
    html = (out / "report.html").read_text(encoding="utf-8")
    assert ">failed<" in html and "2 of 3 samples failed" in html
    api = payload(out / "report/api/qa.js")
    assert [(r["id"], r["st"]) for r in api["rows"]] == [("a/0", "failed"), ("a/1", "failed")]
    assert api["rows"][0]["e"] == "HTTP 500 <b>boom</b>"
    local = payload(out / "report/local/qa.js")
    assert [r["st"] for r in local["rows"]] == ["right", "unparsed", "wrong"]
    board = html[html.index('id="leaderboard"'):html.index('id="datasets"')]
    assert "1 unanswered" in board  # the leaderboard counts answers that named nothing
    assert local["rows"][2]["v"] == "namespaces: failed: AssertionError in test 2"  # the sandbox's verdict
    assert "<b>" not in (out / "report/api/qa.js").read_text(encoding="utf-8")


def test_luopan_report_on_a_folder_that_is_not_a_run_is_a_one_line_error(tmp_path, capsys):
    from luopan.cli import main

    (tmp_path / "notes.txt").write_text("hello")
    for where in (tmp_path, tmp_path / "missing"):
        assert main(["report", str(where)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and "not a run folder" in err


def test_radar_chart_for_three_or_more_categories_and_escaped_labels():
    from luopan_report.svg import radar

    svg = str(radar(["a<b>", "STEM", "Humanities"], [("m<script>", [50.0, 60.0, None]), ("n", [1.0, 2.0, 3.0])]))
    assert svg.startswith("<svg") and svg.count("<polygon") == 4 + 2
    assert "<script>" not in svg and "a&lt;b&gt;" in svg and "m&lt;script&gt;" in svg


def test_script_json_escapes_what_could_end_a_script():
    from luopan_report.build import script_json

    s = script_json({"k": "</script><!-- & \u2028\u2029 >"})
    assert not set("<>&\u2028\u2029") & set(s)
    assert json.loads(s) == {"k": "</script><!-- & \u2028\u2029 >"}


def test_fake_cmmlu_run_with_two_models_keeps_the_page_small(tmp_path):
    """The full CMMLU (11,582 questions) with two fake models: the page stays under 2 MB because the samples
    live in per-unit files."""
    import os

    from luopan.plugins import reset_registry

    if not any((Path(d) / "cmmlu").is_dir() for d in os.environ.get("LUOPAN_DATA", "").split(os.pathsep) if d):
        pytest.skip("CMMLU not found under $LUOPAN_DATA")
    from luopan.cli import main

    cfg = tmp_path / "r.yaml"
    cfg.write_text(f"run: {{name: cmmlu2, output_dir: {tmp_path / 'outputs'}}}\n"
                   "models:\n  - preset: fake\n  - {name: fake-seed1, backend: fake, kind: base, params: {seed: 1}}\n"
                   "datasets:\n  - preset: cmmlu\n", encoding="utf-8")
    reset_registry(registry())
    try:
        assert main(["run", str(cfg), "--no-progress"]) == 0
    finally:
        reset_registry(None)
    out = tmp_path / "outputs" / "cmmlu2"
    page = out / "report.html"
    assert page.stat().st_size < 2 * 1024 * 1024
    html = page.read_text(encoding="utf-8")
    assert "<svg" in html  # CMMLU's five categories: a radar chart
    assert html.count('class="best"') >= 1
    rows = payload(out / "report/fake/cmmlu.js")["rows"]
    assert len(rows) == 11582


def test_operations_show_an_api_models_cost_and_retries(tmp_path, report_registry):
    """An API model behind a proxy that fails a third of the requests with 500: the operations table shows its
    tokens and their cost at its price, and the API calls table its retries (from run.log)."""
    import faultproxy as fp
    from luopan.cli import main

    with fp.ProxyThread(None, faults=["500"], fault_rate=0.34, seed=4) as proxy:
        model = ("  - {name: api, backend: openai, kind: chat, params: {base_url: '" + proxy.base_url + "', "
                 "model: mock, api_key_env: null, max_retries: 8, retry_max_wait: 0.05, "
                 "price: {prompt: 2.0, completion: 8.0, currency: USD}}}\n")
        assert main(["run", str(run_file(tmp_path, model)), "--no-progress"]) == 0
        stats = proxy.stats.copy()
    out = tmp_path / "outputs" / "r1"
    html = (out / "report.html").read_text(encoding="utf-8")
    result = json.loads((out / "results/api/toy.json").read_text())
    assert result["usage"]["cost"] > 0
    assert f"{result['usage']['cost']:.4f} USD" in html
    api = html[html.index("API calls"):]
    retried = stats.faults.get("500", 0)
    assert retried > 0
    row = re.search(r"<td[^>]*>mock</td><td[^>]*>[^<]*</td><td[^>]*>(\d+)</td><td[^>]*>(\d+)</td>", api)
    assert row and int(row.group(2)) == retried, (row and row.groups(), retried)


def test_plots_saved_by_plugins_are_embedded(tmp_path, report_registry):
    """A heatmap another plugin saved in the run folder (the needle grids, the arena's ratings) is shown in the
    page as a data: image, so the page still fetches nothing."""
    import base64

    from luopan.cli import main

    assert main(["run", str(run_file(tmp_path, "  - {backend: fake}\n")), "--no-progress"]) == 0
    out = tmp_path / "outputs" / "r1"
    png = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")
    (out / "needle").mkdir()
    (out / "needle" / "single.png").write_bytes(png)
    assert main(["report", str(out)]) == 0
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "data:image/png;base64," + base64.b64encode(png).decode() in html
    assert "<figcaption>needle/single.png</figcaption>" in html
    assert not re.search(r"https?://", html)
