"""The ``vllm`` backend: ``vllm.LLM`` in process (CUDA). Registration only: vllm is imported when a run loads the
model. The engine has not run on luopan's machines (no GPU); its request and result translation is tested against
vLLM's documented interface with a stand-in engine (tests/test_vllm_boundary.py). ``vllm serve`` is used through
the ``openai`` backend (preset ``local-vllm``)."""

from luopan import hookimpl


@hookimpl
def luopan_register_backends(register):
    register(
        "vllm",
        "luopan_vllm.backend:VLLMBackend",
        params="luopan_vllm.backend:VLLMParams",
        description="vllm.LLM in process (CUDA; tensor parallel); generation, likelihood from prompt logprobs",
    )
