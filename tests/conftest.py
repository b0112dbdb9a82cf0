from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "datasets"
os.environ.setdefault("LUOPAN_DATA", str(SHARED_DATA))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def toy_registry():
    """The installed plugins plus the toy dataset, as the process-wide registry."""
    import toy_plugin

    from luopan.plugins import load_registry, reset_registry

    reg = load_registry(extra_plugins=[("toy", toy_plugin)])
    reset_registry(reg)
    yield reg
    reset_registry(None)
