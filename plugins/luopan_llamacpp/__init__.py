"""The ``llamacpp`` backend: GGUF models in process through llama-cpp-python, the fast path on CPU. Registration
only: llama_cpp is imported when a run loads the model."""

from luopan import hookimpl


@hookimpl
def luopan_register_backends(register):
    register(
        "llamacpp",
        "luopan_llamacpp.backend:LlamaCppBackend",
        params="luopan_llamacpp.params:LlamaCppParams",
        description="GGUF model in process via llama-cpp-python (CPU fast path; GPU layers optional)",
    )
