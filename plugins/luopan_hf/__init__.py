"""The ``hf`` backend: local models through Hugging Face transformers (base models by likelihood, chat models by
generation). Registration only: torch and transformers are imported when a run loads the model."""

from luopan import hookimpl


@hookimpl
def luopan_register_backends(register):
    from luopan_hf.backend import HFBackend
    from luopan_hf.params import HFParams

    register(
        "hf",
        HFBackend,
        params=HFParams,
        description="local model via transformers: folder, hub id, pkg:<package> or GGUF file",
    )
