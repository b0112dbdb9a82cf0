"""The ``hf`` backend: local models through Hugging Face transformers (base models by likelihood, chat models by
generation). Registration only: torch and transformers are imported when a run loads the model."""

from luopan import hookimpl


@hookimpl
def luopan_register_backends(register):
    register(
        "hf",
        "luopan_hf.backend:HFBackend",
        params="luopan_hf.params:HFParams",
        description="local model via transformers: folder, hub id, pkg:<package> or GGUF file",
    )
