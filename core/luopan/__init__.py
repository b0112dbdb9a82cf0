"""luopan (罗盘): a plugin-based microkernel for evaluating large language models.

The public API is what ``__all__`` lists (plugins and users import these names from ``luopan``) plus the public
support modules in :data:`PUBLIC_MODULES`, each with its own ``__all__`` (model location, tokenization rules,
prompt templates, data files, statistics). Any other kernel name is internal and may change;
``tests/test_plugin_api.py`` checks that no built-in plugin uses one. docs/plugins.md documents exactly this surface.

Nothing is imported until a name is used: ``import luopan`` stays cheap (and an interrupted start-up has almost
nothing to interrupt). The kernel imports no model library.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing is not imported at start-up: nothing here may be slow to interrupt
__version__ = "0.1.0"

#: public name -> the kernel module that defines it
_HOME: dict[str, str] = {
    # the Python API
    "evaluate": "api", "load_results": "api", "Results": "api", "Score": "api", "run_samples": "api",
    # hooks and the plugin contract
    "hookimpl": "hookspecs", "Register": "hookspecs", "RegisterPreset": "hookspecs", "RunView": "hookspecs",
    "RegisterCommand": "hookspecs",
    "RunnerHost": "hookspecs",
    # components plugins implement, and what they receive and return
    "Backend": "components", "Dataset": "components", "Evaluator": "components", "Summarizer": "components",
    "Runner": "components", "EvalContext": "components", "Components": "components", "UnitResult": "components",
    "SummaryTable": "components",
    # requests, results, samples
    "Sample": "types", "ScoredSample": "types", "GenerationConfig": "types", "GenerationRequest": "types",
    "GenerationResult": "types", "LoglikelihoodRequest": "types", "LoglikelihoodResult": "types",
    "FailedResult": "types", "ConversationResult": "types", "ModelKind": "types", "Request": "types",
    "Result": "types",
    # runs and units (runners, run_finish hooks)
    "RunConfig": "config", "ResolvedModel": "config", "ResolvedDataset": "config", "generation_config": "config",
    "load_run": "config", "Unit": "units", "UnitSpec": "units", "question_key": "units", "execute_spec": "execution", "RequestCache": "cache",
    "load_registry": "plugins",
    # errors
    "LuopanError": "errors", "ConfigError": "errors", "MissingDependencyError": "errors",
    "PluginLoadError": "errors", "InputTooLongError": "backend_errors", "OutputError": "files",
    # helpers every plugin may use
    "require": "deps", "find_data": "data", "files_fingerprint": "data", "read_jsonl": "data",
    "csv_records": "data", "prediction_files": "outputs", "atomic_write": "files", "safe_name": "files", "add_secret": "secrets",
    "nearest": "plugins", "to_markdown": "report", "rebuild_reports": "report", "PromptTemplate": "prompts", "validate_template": "prompts",
    "TemplateRenderError": "prompts", "ensure_dir": "files",
}

#: support modules whose own ``__all__`` is public too (``from luopan import models``)
PUBLIC_MODULES = ("models", "tokenization", "prompts", "data", "backend_errors", "deps", "limits", "stats",
                  "reasoning")

__all__ = ["__version__", "PUBLIC_MODULES", *_HOME]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time names load on first use
    from typing import Any

    from luopan.api import Results, Score, evaluate, load_results, run_samples
    from luopan.backend_errors import InputTooLongError
    from luopan.cache import RequestCache
    from luopan.components import (
        Backend,
        Components,
        Dataset,
        EvalContext,
        Evaluator,
        Runner,
        Summarizer,
        SummaryTable,
        UnitResult,
    )
    from luopan.config import ResolvedDataset, ResolvedModel, RunConfig, generation_config, load_run
    from luopan.data import csv_records, files_fingerprint, find_data, read_jsonl
    from luopan.deps import require
    from luopan.errors import ConfigError, LuopanError, MissingDependencyError, PluginLoadError
    from luopan.execution import execute_spec
    from luopan.files import OutputError, atomic_write, ensure_dir, safe_name
    from luopan.hookspecs import Register, RegisterCommand, RegisterPreset, RunnerHost, RunView, hookimpl
    from luopan.outputs import prediction_files
    from luopan.plugins import load_registry, nearest
    from luopan.prompts import PromptTemplate, TemplateRenderError, validate_template
    from luopan.report import rebuild_reports, to_markdown
    from luopan.secrets import add_secret
    from luopan.types import (
        ConversationResult,
        FailedResult,
        GenerationConfig,
        GenerationRequest,
        GenerationResult,
        LoglikelihoodRequest,
        LoglikelihoodResult,
        ModelKind,
        Request,
        Result,
        Sample,
        ScoredSample,
    )
    from luopan.units import Unit, UnitSpec, question_key


def __getattr__(name: str) -> Any:  # noqa: F821 - Any is for type checkers only
    import importlib

    home = _HOME.get(name)
    if home is not None:
        value = getattr(importlib.import_module(f"luopan.{home}"), name)
        globals()[name] = value
        return value
    if name in PUBLIC_MODULES:
        return importlib.import_module(f"luopan.{name}")
    raise AttributeError(f"module 'luopan' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(__all__) | set(PUBLIC_MODULES))
