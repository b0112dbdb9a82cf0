"""docs/python.md's examples run as written (in one fresh process, in order, in a scratch folder)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "python.md"


def test_the_python_api_examples_run(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert len(blocks) >= 4
    script = "\n\n".join(blocks)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "did you mean 'cmmlu'" in r.stdout
    assert "fake-chat demo_qa" in r.stdout
    assert (tmp_path / "outputs" / "first" / "summary.json").is_file()
