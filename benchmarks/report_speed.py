"""The HTML report of a big run: how long `luopan report` takes, how big the files are, and how soon the page is
usable in headless Chromium.

The run: all 11,582 CMMLU test questions with two fake models (the `fake` backend, seeds 0 and 1), so the page
holds two units of 11,582 samples each and the side-by-side view pairs them.

Usage: python benchmarks/report_speed.py [--repeats 3] [--chromium PATH]
  $LUOPAN_DATA  the data folder (default ../shared/datasets beside the repository)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import EPILOG, REPO, data_dir

sys.path.insert(0, str(REPO / "tools"))
from cdp import DevTools  # noqa: E402 - tools/cdp.py

RUN = """\
run: {{output_dir: {out}, name: report}}
models:
  - {{preset: fake, name: model-a}}
  - {{preset: fake, name: model-b, params: {{seed: 1}}}}
datasets:
  - preset: cmmlu
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=EPILOG)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser"))
    args = ap.parse_args()
    os.environ.setdefault("LUOPAN_DATA", str(data_dir()))
    luopan = shutil.which("luopan") or sys.exit("luopan is not installed")
    work = Path(tempfile.mkdtemp(prefix="luopan-report-"))
    cfg = work / "run.yaml"
    cfg.write_text(RUN.format(out=work / "out"), encoding="utf-8")
    subprocess.run([luopan, "run", str(cfg), "--no-progress"], check=True, capture_output=True)
    run = work / "out" / "report"
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        subprocess.run([luopan, "report", str(run)], check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    files = sorted((run / "report").rglob("*.js"))
    report = {"luopan_report_s": [round(t, 2) for t in times],
              "luopan_report_median_s": round(statistics.median(times), 2),
              "report_html_bytes": (run / "report.html").stat().st_size,
              "sample_files_bytes": [f.stat().st_size for f in files]}
    if args.chromium:
        opened, side = [], []
        for i in range(args.repeats):
            browser = DevTools(args.chromium, work / f"chromium{i}")
            try:
                browser.call("Page.enable")
                t0 = time.perf_counter()
                browser.call("Page.navigate", {"url": (run / "report.html").as_uri()})
                browser.wait("document.readyState === 'complete' && document.querySelectorAll('table.sortable').length > 0")
                opened.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                browser.js("document.getElementById('c-load').click(); 1")
                browser.wait("document.querySelectorAll('#c-list article').length > 0", timeout=60)
                side.append(time.perf_counter() - t0)
                errors = browser.errors()
            finally:
                browser.close()
        report.update({"page_usable_s": [round(t, 2) for t in opened],
                       "page_usable_median_s": round(statistics.median(opened), 2),
                       "side_by_side_of_2x11582_s": [round(t, 2) for t in side],
                       "side_by_side_median_s": round(statistics.median(side), 2),
                       "console_errors": errors})
    print(json.dumps(report, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
