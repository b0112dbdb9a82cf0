"""report.html in a real browser: headless Chromium opens the page from file://, the sample browser and the side
by side view render their rows (the per-unit script files load), and hostile text from the model and the
dataset stays text: no injected element, no injected script runs.

Needs Chromium (Debian: ``apt-get install -y chromium``); skipped, saying so, where it is not installed."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
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
