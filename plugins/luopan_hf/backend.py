"""The ``hf`` backend class. This module imports neither torch nor transformers: identity() must stay cheap, so the
heavy modules (:mod:`luopan_hf.model`, :mod:`luopan_hf.likelihood`, :mod:`luopan_hf.generation`) are imported
inside load() and the request methods."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from typing import Any

from luopan import models
from luopan.components import Backend
from luopan.types import GenerationRequest, GenerationResult, LoglikelihoodRequest, LoglikelihoodResult

WHO = "hf backend"


class HFBackend(Backend):
    """A causal LM loaded with transformers. Base models score log-likelihoods; chat models generate through their
    chat template. Both capabilities are available to either kind."""

    capabilities = frozenset({"loglikelihood", "generate"})

    def __init__(
        self,
        path: str,
        gguf_file: str | None = None,
        dtype: str = "auto",
        device: str = "auto",
        device_map: str | dict[str, Any] | None = None,
        batch_size: int | str = 8,
        max_length: int | None = None,
        revision: str | None = None,
        trust_remote_code: bool = False,
        chat_template: str | None = None,
        compile: bool = False,
        add_bos_token: bool | None = None,
        chunk_size: int = 1024,
    ) -> None:
        self.path = path
        self.gguf_file = gguf_file
        self.dtype = dtype
        self.device = device
        self.device_map = device_map
        self.batch_size = batch_size
        self.max_length = max_length
        self.revision = revision
        self.trust_remote_code = trust_remote_code
        self.chat_template = chat_template
        self.compile = compile
        self.add_bos_token = add_bos_token
        self.chunk_size = chunk_size
        self.resolved = models.resolve(path, who=WHO)
        self.lm: Any = None  # luopan_hf.model.LoadedModel once loaded
        # switches for tests and benchmarks; they never change results, only how they are computed
        self.group_contexts = True
        self.reuse_prefix = True
        self.ignore_eos = False

    # ------------------------------------------------------------ before anything loads
    @classmethod
    def environment(cls) -> list[str]:
        from luopan_hf import checks

        return checks.environment()

    @classmethod
    def preflight(cls, params: Any) -> list[str]:
        """Packages, the model's files (a missing folder, a ``pkg:`` package not installed, a gguf_file not in
        the folder), and a CUDA device or device map on a machine without a GPU; nothing is loaded."""
        from luopan_hf import checks

        return checks.preflight(params)

    @classmethod
    def ships_chat_template(cls, params: Any) -> bool | None:
        """From the tokenizer config of a local folder, a hub cache snapshot or a GGUF's converted folder."""
        from luopan_hf import checks

        return checks.ships_chat_template(params)

    # ------------------------------------------------------------ identity
    def _resolved_dtype(self) -> str:
        if self.dtype != "auto":
            return self.dtype
        if self.device == "cpu":
            return "float32"
        import torch  # only to know whether "auto" means a GPU; weights are not touched

        if self.device == "auto" and not torch.cuda.is_available() and self.device_map is None:
            return "float32"
        return "bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "float16"

    def identity(self) -> dict[str, Any]:
        local = self.resolved.local
        if local is not None:
            fp = models.fingerprint(models.weight_files(self.resolved, self.gguf_file, who=WHO))
        else:
            fp = f"hub:{self.revision or 'main'}"
        ident: dict[str, Any] = {
            "backend": "hf",
            "path": self.path,
            "gguf_file": self.gguf_file,
            "dtype": self._resolved_dtype(),
            "revision": self.revision,
            "weights": fp,
        }
        # options that change outputs, recorded only when set so that default identities stay short
        if self.chat_template is not None:
            ident["chat_template"] = hashlib.sha256(self.chat_template.encode()).hexdigest()[:16]
        if self.add_bos_token is not None:
            ident["add_bos_token"] = self.add_bos_token
        if self.max_length is not None:
            ident["max_length"] = self.max_length
        return ident

    def runtime(self) -> dict[str, Any]:
        """Outside the cache key, recorded in provenance: library versions and what loading resolved."""
        from importlib import metadata

        out: dict[str, Any] = {}
        for lib in ("torch", "transformers"):
            try:
                out[lib] = metadata.version(lib)
            except metadata.PackageNotFoundError:
                pass
        lm = self.lm
        if lm is not None:
            out.update(device=str(lm.device), dtype=str(lm.dtype).removeprefix("torch."), batch_size=lm.batch_size,
                       max_length=lm.max_length, attention=lm.attn_impl, compile=lm.compile)
        return out

    # ------------------------------------------------------------ life cycle
    def load(self) -> None:
        if self.lm is not None:
            return
        from luopan_hf.model import load_model

        self.lm = load_model(self)

    def close(self) -> None:
        if self.lm is not None:
            self.lm.release()
            self.lm = None

    # ------------------------------------------------------------ requests
    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[LoglikelihoodResult]:
        self.load()
        from luopan_hf.likelihood import score_requests

        return score_requests(
            self.lm, requests, group_contexts=self.group_contexts, reuse_prefix=self.reuse_prefix
        )

    def token_logprobs(self, texts: Sequence[str]) -> list[list[float]]:
        """Optional API beside :meth:`loglikelihood`: the per-token log-probabilities of each text after the
        model's start token (what membership signals such as Min-K% need). Not cached, not part of ``Backend``."""
        self.load()
        from luopan_hf.likelihood import token_logprobs

        return token_logprobs(self.lm, texts)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        self.load()
        from luopan_hf.generation import generate_requests

        return generate_requests(self.lm, requests, ignore_eos=self.ignore_eos)

    def stream(self, mode: str, requests: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        """Generation yields each answer the moment its sequence finishes, so an interrupted run keeps all but
        the sequences still decoding (a chunk of long chain-of-thought answers is many minutes on a CPU).
        Likelihood keeps the default: one ``chunk_size`` call at a time."""
        if mode != "generate":
            yield from super().stream(mode, requests)
            return
        self.load()
        from luopan_hf.generation import iter_generate

        chunk = max(1, int(self.chunk_size))
        for start in range(0, len(requests), chunk):
            for i, result in iter_generate(self.lm, requests[start : start + chunk], ignore_eos=self.ignore_eos):
                yield start + i, result
