"""Options of the ``llamacpp`` backend, validated from YAML (unknown keys are an error).

``path``, ``gguf_file``, ``chat_template`` and ``add_bos_token`` mean what they mean for the ``hf`` backend, so a
model preset keeps its identity when its backend is swapped; the rest are llama.cpp's own."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class LlamaCppParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="folder holding the GGUF, pkg:<python_package>, or the .gguf file itself")
    gguf_file: str | None = Field(
        default=None, description="the GGUF file inside `path` (default: the only .gguf there)"
    )
    chat_template: str | None = Field(
        default=None, description="a Jinja chat template replacing the one stored in the GGUF"
    )
    add_bos_token: bool | None = Field(
        default=None, description="add special tokens (BOS) to plain text; default: the GGUF tokenizer's rule"
    )
    n_ctx: int = Field(
        default=4096, ge=0, description="context window in tokens (0: the model's training context); longer "
        "inputs are an error, never truncated"
    )
    n_threads: int | None = Field(default=None, ge=1, description="CPU threads (default: physical cores)")
    n_batch: int = Field(default=512, ge=1, description="tokens per llama_decode call")
    n_gpu_layers: int = Field(default=0, ge=-1, description="layers offloaded to a GPU build (-1: all)")
    flash_attn: bool = Field(default=False, description="llama.cpp's flash attention")
    reuse_prefix: bool = Field(
        default=True, description="keep the KV cache of the tokens a request shares with the previous one "
        "(false: evaluate every context from its start)"
    )
    seed: int = Field(default=0, description="sampling seed when a request sets none")
    chunk_size: int = Field(
        default=1024, ge=1, description="requests per backend call (cached after each call)"
    )
