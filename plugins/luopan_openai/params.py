"""Options of the ``openai`` backend (``params:`` of a model in the run file)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Price(BaseModel):
    """Price per million tokens, for the cost line of the results."""

    model_config = ConfigDict(extra="forbid")

    prompt: float = Field(ge=0, description="per million prompt (input) tokens")
    completion: float = Field(ge=0, description="per million completion (output) tokens")
    currency: str = "USD"


class OpenAIParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(description="the service's OpenAI-compatible base URL, e.g. https://api.openai.com/v1")
    model: str = Field(description="the model name the service expects")
    api_key_env: str | None = Field(
        default="OPENAI_API_KEY",
        description="environment variable holding the API key (never the key itself); null for local servers",
    )
    api: Literal["auto", "chat", "completions"] = Field(
        default="auto", description="chat completions or legacy completions; auto: chat for chat models"
    )
    extra_headers: dict[str, str] = Field(
        default_factory=dict, description="sent with every request; a value 'env:NAME' is read from $NAME"
    )
    timeout: float = Field(default=120.0, gt=0, description="seconds per attempt (waiting for the answer)")
    connect_timeout: float = Field(
        default=10.0, gt=0, description="seconds to open a connection (at most timeout); a slow answer is timeout's"
    )
    unreachable_after: float | None = Field(
        default=30.0, gt=0,
        description="until the server has answered once (any HTTP response), connection failures and timeouts are "
        "retried for at most this many seconds from the first attempt, whatever max_retries says; then every "
        "pending request fails with one error naming the URL. After the first answer the normal retry policy "
        "applies. null: the normal policy from the start (e.g. for a server that is still starting)",
    )
    max_concurrency: int = Field(default=8, ge=1, le=1024, description="requests in flight at once")
    rpm: float | None = Field(default=None, gt=0, description="requests per minute, shared by the whole run")
    tpm: float | None = Field(default=None, gt=0, description="tokens per minute, shared by the whole run")
    rate_limit_scope: str | None = Field(
        default=None,
        description="runs and processes with the same scope share one limit; default: base_url + api_key_env",
    )
    max_retries: int = Field(
        default=8, ge=0,
        description="retries of 429, 5xx, timeouts and dropped connections (before the first answer, "
        "connection failures and timeouts are bounded by unreachable_after instead)",
    )
    retry_max_wait: float = Field(default=60.0, gt=0, description="longest backoff between attempts, seconds")
    price: Price | None = None
    seed: int | None = Field(default=None, description="sent as 'seed' where the generation config has none")
    logprobs_check: bool = Field(
        default=True,
        description="before likelihood scoring, check once that the server's echo logprobs score each token "
        "given the tokens before it (llama-cpp-python's server shifts them by one)",
    )
    chunk_size: int = Field(default=64, ge=1, description="answers cached per transaction (also every second)")

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {v!r}")
        return v.rstrip("/")
