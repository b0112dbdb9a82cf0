"""The ``openai`` backend: any OpenAI-compatible service (OpenAI, DeepSeek, SiliconFlow, InternLM Puyu, local
vLLM / LMDeploy / llama.cpp servers) through the official async SDK, with run-wide rate limits, retries and
token accounting. Registration only: the SDK is imported when a run loads the model."""

from luopan import hookimpl


@hookimpl
def luopan_register_backends(register):
    register(
        "openai",
        "luopan_openai.backend:OpenAIBackend",
        params="luopan_openai.params:OpenAIParams",
        description="OpenAI-compatible API (chat or completions) with shared rate limits and retries",
    )
