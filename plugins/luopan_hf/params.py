"""Options of the ``hf`` backend, validated from YAML (unknown keys are an error)."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class HFParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(
        description="local folder, hub id (online only), or pkg:<python_package> (that package's folder)"
    )
    gguf_file: str | None = Field(default=None, description="a GGUF file inside `path` (dequantized at load)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto", description="auto: float32 on CPU, bfloat16 (or float16) on CUDA"
    )
    device: str = Field(default="auto", description="auto | cpu | cuda | cuda:N")
    device_map: str | dict[str, Any] | None = Field(
        default=None, description="accelerate device map (several GPUs)"
    )
    batch_size: int | Literal["auto"] = Field(default=8, description="sequences per forward pass, or auto")
    max_length: int | None = Field(default=None, ge=1, description="default: the model's own maximum length")
    revision: str | None = None
    trust_remote_code: bool = False
    chat_template: str | None = Field(
        default=None, description="a Jinja chat template replacing the tokenizer's"
    )
    compile: bool = Field(
        default=False, description="static KV cache + torch.compile for decoding (CUDA only)"
    )
    add_bos_token: bool | None = Field(
        default=None, description="prepend BOS when tokenizing plain text; default: the tokenizer's own rule"
    )
    chunk_size: int = Field(
        default=1024, ge=1, description="requests per backend call (cached after each call)"
    )

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", v):
            raise ValueError("expected auto, cpu, cuda or cuda:N")
        return v

    @field_validator("batch_size")
    @classmethod
    def _batch(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 1:
            raise ValueError("must be at least 1")
        return v
