"""The vllm backend's CUDA-only settings, against a stand-in engine. The backend itself runs for real on vLLM's
CPU build in tests/test_vllm_real.py (likelihood, generation, the server); what one CPU cannot run is tensor
parallelism, so the engine arguments for it are checked here against stand-ins of ``vllm.LLM`` and
``vllm.SamplingParams`` (tests/engine_standins.py), on a machine where no vLLM is installed."""

from __future__ import annotations

import pytest
from engine_standins import install_vllm, make_model_folder

from luopan.errors import MissingDependencyError

pytestmark = pytest.mark.boundary


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_model_folder(tmp_path_factory.mktemp("toy-model"))


@pytest.fixture
def backend(folder, monkeypatch):
    install_vllm(monkeypatch)
    from luopan_vllm.backend import VLLMBackend

    b = VLLMBackend(path=str(folder), tensor_parallel_size=2, max_model_len=512, dtype="bfloat16",
                    gpu_memory_utilization=0.5, seed=7)
    b.load()
    return b


def test_engine_arguments(backend, folder):
    llm = backend.llm
    assert llm.model == str(folder)
    assert llm.kwargs["tensor_parallel_size"] == 2 and llm.kwargs["max_model_len"] == 512
    assert llm.kwargs["dtype"] == "bfloat16" and llm.kwargs["gpu_memory_utilization"] == 0.5
    assert llm.kwargs["seed"] == 7 and "quantization" not in llm.kwargs
    # its own worker processes, never Ray (inside a Ray actor vLLM would ask for a nested placement group)
    assert llm.kwargs["distributed_executor_backend"] == "mp"


def test_defaults_leave_memory_to_vllm(folder, monkeypatch):
    install_vllm(monkeypatch)
    from luopan_vllm.backend import VLLMBackend

    kwargs = VLLMBackend(path=str(folder)).engine_kwargs()
    assert "gpu_memory_utilization" not in kwargs and "kv_cache_memory_bytes" not in kwargs
    assert "distributed_executor_backend" not in kwargs


def test_identity_names_backend_weights_and_options(folder):
    from luopan_vllm.backend import VLLMBackend

    ident = VLLMBackend(path=str(folder)).identity()
    assert ident["backend"] == "vllm" and ident["weights"] and ident["engine"].startswith("vllm ")
    assert VLLMBackend(path=str(folder), tensor_parallel_size=4).identity() != ident
    assert VLLMBackend(path=str(folder), chat_template="{{x}}").identity() != ident


def test_without_vllm_installed_the_error_says_which_extra(folder, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "vllm", None)  # import fails as on a machine without vLLM
    from luopan_vllm.backend import VLLMBackend

    with pytest.raises(MissingDependencyError, match=r"pip install 'luopan\[vllm\]'"):
        VLLMBackend(path=str(folder)).load()
