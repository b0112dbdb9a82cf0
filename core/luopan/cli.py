"""The ``luopan`` command line: run, validate, compare, list, which, plugins, report, and the commands plugins add.

Plugins load when a command needs them, never at import, so a broken plugin cannot break ``--help``. A command
that is not one of :data:`BUILTIN_COMMANDS` is looked up among the plugins' (``luopan_register_commands``).
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # no typing import at start-up: a Ctrl-C there would be outside main's handler
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

LIST_KINDS = ("backends", "datasets", "evaluators", "summarizers", "runners", "presets")
#: the commands of luopan itself; any other name is a plugin's command (plugins are loaded to find it)
BUILTIN_COMMANDS = ("run", "validate", "list", "compare", "which", "plugins", "report")


def _parser() -> Any:
    import argparse

    from luopan import __version__

    p = argparse.ArgumentParser(prog="luopan", description="luopan (罗盘): evaluate large language models.",
                                epilog="Plugins may add commands (luopan plugins lists them).")
    p.add_argument("--version", action="version", version=f"luopan {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    p.set_defaults(_subparsers=sub)
    r = sub.add_parser(
        "run", help="run an evaluation: a YAML file, a run preset (e.g. quickstart), or --model/--dataset",
        description="Run an evaluation from a run file, a run preset, or the one-line form "
                    "(luopan run --model smollm2-135m-instruct --dataset cmmlu --limit-per-subset 1). "
                    "Answers are cached by content: rerunning the same command resumes (nothing to pass for it). "
                    "Outputs go to run.output_dir (default ./outputs, relative to the folder you run the command "
                    "in) / run.name. Data files are searched in the working folder, the run file's folder, "
                    "run.data and $LUOPAN_DATA.")
    r.add_argument("file", nargs="?", help="run file (YAML) or run preset name; omit it with --model/--dataset")
    r.add_argument("--dry-run", action="store_true", help="print the plan (units, requests, cached), run nothing")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.add_argument("--output-dir", help="override run.output_dir (relative paths: from the working folder)")
    r.add_argument("--name", help="override run.name (the output sub-folder)")
    r.add_argument("--backend", help="run every model with this backend (its preset's identity kept)")
    r.add_argument("--runner", help="override run.runner: local (default), ray, slurm (luopan list runner)")
    r.add_argument("--address", help="for runners that join a cluster (ray): auto, or HOST:PORT of its head")
    one = r.add_argument_group("one-line runs (no run file)")
    one.add_argument("--model", action="append", default=[], metavar="MODEL",
                     help="a model preset, hf:PATH, llamacpp:FILE.gguf or openai:MODEL; repeat or comma-separate")
    one.add_argument("--dataset", action="append", default=[], metavar="DATASET",
                     help="dataset presets, comma-separated; OpenCompass names such as cmmlu_gen / mmlu_ppl pick "
                          "the mode")
    one.add_argument("--kind", choices=("base", "chat"), help="the models' kind (base: likelihood, chat: generate)")
    one.add_argument("--limit", type=int, help="questions per dataset")
    one.add_argument("--limit-per-subset", type=int, help="questions per subset (e.g. 1 per CMMLU subject)")
    one.add_argument("--shots", type=int, help="few-shot examples")
    one.add_argument("--mode", choices=("auto", "likelihood", "generate"), help="likelihood or generation")
    one.add_argument("--base-url", help="for openai:MODEL: the service's OpenAI-compatible base URL")
    one.add_argument("--api-key-env", help="for openai:MODEL: the environment variable holding the key")
    one.add_argument("--rpm", type=float, help="for openai:MODEL: requests per minute")
    one.add_argument("--print-config", action="store_true",
                     help="print the equivalent run file (YAML) and exit: the step from a one-liner to a file")
    r.add_argument("--debug", action="store_true",
                   help="one unit at a time in this process (the local runner), the log on the console in readable "
                        "lines beside run.log, full tracebacks")
    r.add_argument("-r", "--reuse", action="store_true",
                   help="accepted for OpenCompass users: reuse is automatic (answers are cached by content)")
    v = sub.add_parser("validate", help="check a run file without running it")
    v.add_argument("file")
    v.add_argument("--backend", help="check the run as --backend would run it")
    v.add_argument("--debug", action="store_true", help="full tracebacks with the errors")
    ls = sub.add_parser("list", help="list registered components or presets")
    ls.add_argument("kind", nargs="?", choices=LIST_KINDS)
    c = sub.add_parser(
        "compare", help="paired comparison of two models on the questions both answered",
        description="Compare models on the questions both answered: the difference in score with a paired "
                    "bootstrap 95% interval, McNemar's exact test (scores 0 or 1) or a paired z test, Holm's "
                    "correction across datasets, and the questions one got right and the other wrong. "
                    "One run folder: every model against the baseline (default: the first). Two run folders: the "
                    "baseline of RUN_A (default: its first model) against every model of RUN_B. A dataset run "
                    "with different prompts, shots, data files or generation settings is compared with a warning.")
    c.add_argument("run_a", metavar="RUN_A", help="a run's output folder (e.g. outputs/my-run)")
    c.add_argument("run_b", metavar="RUN_B", nargs="?", help="a second run's output folder")
    c.add_argument("--baseline", metavar="MODEL", help="the model the others are compared with (of RUN_A)")
    c.add_argument("--resamples", type=int, default=1000, help="paired bootstrap resamples (default 1000)")
    c.add_argument("--seed", type=int, default=0, help="the bootstrap's seed (default 0)")
    c.add_argument("--out", metavar="FOLDER", help="also write compare.md and compare.json to FOLDER")
    w = sub.add_parser("which", help="which plugin, distribution or registry file defines NAME")
    w.add_argument("name")
    sub.add_parser("plugins", help="list plugins, their distributions, and load errors")
    rp = sub.add_parser("report", help="rebuild report.html (and other reports) from a finished run folder")
    rp.add_argument("run_dir", metavar="RUN_DIR", help="a run's output folder (e.g. outputs/my-run)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """The command line. Everything it prints goes through a redacting stream (no secret reaches the console);
    errors are one line and an exit code, Ctrl-C at any moment (imports included) is a one-line message."""
    out, err, unraisable = sys.stdout, sys.stderr, sys.unraisablehook
    sys.unraisablehook = _unraisable
    try:
        from luopan._gc import fewer_collections
        from luopan.secrets import RedactingStream

        sys.stdout, sys.stderr = RedactingStream(out), RedactingStream(err)
        with fewer_collections():
            return _main(argv)
    except KeyboardInterrupt:
        print("interrupted: finished requests are cached; rerun the same command to resume", file=sys.stderr)
        return 130
    finally:
        sys.stdout, sys.stderr, sys.unraisablehook = out, err, unraisable


def _runner_flags(args: Any, cfg: Any, reg: Any) -> None:
    """``--runner`` and ``--address``, checked like the run file's ``run.runner`` and ``run.<runner>``."""
    from luopan.errors import ConfigError, LuopanError

    if args.runner:
        try:
            reg.get("runner", args.runner)
        except LuopanError as exc:
            raise ConfigError(f"--runner: {exc}") from None
        cfg.run.runner = args.runner
    if args.address:
        extra = cfg.run.model_extra if cfg.run.model_extra is not None else {}
        block = dict(extra.get(cfg.run.runner) or {}, address=args.address)
        comp = reg.get("runner", cfg.run.runner)
        try:
            comp.validate_params(block)
        except Exception:
            raise ConfigError(f"--address: runner '{cfg.run.runner}' does not join a cluster (it takes no "
                              f"address); use --runner ray") from None
        extra[cfg.run.runner] = block


class _HideRich:
    """A finder that makes ``rich`` unimportable while it is on ``sys.meta_path``."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "rich" or name.startswith("rich."):
            raise ImportError(f"{name} is hidden while structlog is imported", name=name)


def _import_structlog() -> None:
    """Import structlog without its rich integration. structlog's import brings in rich's traceback and
    pretty-printing for its console renderer (about 50 ms, a twentieth of a fast run), which luopan never uses:
    its log is JSON lines. Only the command line does this (its process is luopan's own); the progress bar
    imports rich later as usual."""
    if "structlog" in sys.modules or "rich" in sys.modules:
        return
    hide = _HideRich()
    sys.meta_path.insert(0, hide)
    try:
        import structlog  # noqa: F401
    finally:
        sys.meta_path.remove(hide)


def _unraisable(info: Any) -> None:
    """A Ctrl-C that lands inside a callback Python cannot raise from (a weak reference's, during an import)
    would be printed as "Exception ignored" and then lost: deliver it to the main thread again instead."""
    if info.exc_type is KeyboardInterrupt:
        import _thread

        _thread.interrupt_main()
        return
    sys.__unraisablehook__(info)


def _main(argv: Sequence[str] | None) -> int:
    import sqlite3

    from luopan.errors import ConfigErrors, LuopanError
    from luopan.files import describe_os_error

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    first = next((a for a in argv if not a.startswith("-")), None)
    command = reg = None
    if first is not None and first not in BUILTIN_COMMANDS:  # perhaps a plugin's command: load the plugins
        from luopan.plugins import get_registry

        reg = get_registry()
        command = reg.commands.get(first)
        if command is not None:
            sp = parser.get_default("_subparsers").add_parser(command.name, help=command.help,
                                                              description=command.help)
            command.configure(sp)
    args = parser.parse_args(argv)
    try:
        if command is not None and args.command == command.name:
            return int(command.run(args, reg) or 0)
        return _dispatch(args)
    except ConfigErrors as exc:
        if getattr(args, "debug", False):
            import traceback

            traceback.print_exc()
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        if len(exc.problems) > 1:
            print(f"{len(exc.problems)} problems; nothing was run", file=sys.stderr)
        return exc.exit_code
    except LuopanError as exc:
        if getattr(args, "debug", False):
            import traceback

            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # the machine failed (disk, permissions) where no luopan error was raised
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{describe_os_error(exc)}", file=sys.stderr)
        return 2
    except sqlite3.Error as exc:
        print(f"error: the request cache failed: {exc}", file=sys.stderr)
        return 2


def _dispatch(args: Any) -> int:
    if args.command == "compare":  # reads run folders only: no plugin is loaded
        return _compare(args)
    from luopan.plugins import get_registry

    reg = get_registry()
    if args.command in ("run", "validate"):
        _import_structlog()
    if args.command == "plugins":
        return _plugins(reg)
    if args.command == "report":
        from luopan.report import rebuild_reports

        for path in rebuild_reports(args.run_dir, reg):
            print(f"written: {path}")
        return 0
    if args.command == "list":
        return _list(reg, args.kind)
    if args.command == "which":
        lines = reg.which(args.name)
        if not lines:
            from luopan.plugins import nearest

            names = [n for k in reg.components.values() for n in k] + [n for k in reg.presets.values() for n in k]
            hint = nearest(args.name, names)
            print(f"error: '{args.name}' is not defined by any plugin or registry file"
                  + (f" (did you mean '{hint}'?)" if hint else ""), file=sys.stderr)
            return 2
        print("\n".join(lines))
        return 0

    from luopan.config import load_run

    entry_problems: list[str] = []  # entries that did not resolve: reported with every other problem below
    if args.command == "run" and (args.model or args.dataset or args.print_config):
        cfg = _one_line(args, reg, entry_problems)
        if cfg is None:
            return 0
    elif args.command == "run" and not args.file:
        from luopan.errors import ConfigError

        raise ConfigError("run: give a run file, a run preset, or --model MODEL --dataset DATASET "
                          "(luopan run --help)")
    else:
        from pathlib import Path

        if not Path(args.file).exists() and args.file not in reg.presets["run"]:
            hint = _not_a_run(args.file, reg)
            if hint:
                from luopan.errors import ConfigError

                raise ConfigError(hint)
        cfg = load_run(args.file, reg, backend=args.backend, collect=entry_problems)
    if args.command == "run" and (args.runner or args.address):
        _runner_flags(args, cfg, reg)
    # packages, keys, data and model files, devices: every problem at once, before anything loads. A dry run
    # sends nothing, so it plans anyway and lists them as what a real run would stop on.
    from luopan.data import run_folders
    from luopan.errors import ConfigErrors
    from luopan.preflight import check_run

    try:
        warnings = check_run(cfg, reg, run_folders(cfg), earlier=entry_problems)
    except ConfigErrors as exc:
        if entry_problems or not (args.command == "run" and args.dry_run):
            raise
        warnings = [f"{p} (a real run stops here)" for p in exc.problems]
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.command == "validate":
        print(f"{args.file}: ok ({len(cfg.models)} model(s) x {len(cfg.datasets)} dataset(s))")
        return 0
    if args.output_dir:
        cfg.run.output_dir = args.output_dir
    if args.name:
        from luopan.errors import ConfigError
        from luopan.files import name_problem

        problem = name_problem(args.name)
        if problem:
            raise ConfigError(f"--name: {args.name[:80]!r} {problem}")
        cfg.run.name = args.name

    from luopan.pipeline import Run, print_plan

    if args.debug:
        cfg.run.runner = "local"  # one unit at a time, here
    run = Run(cfg, reg, progress=not args.no_progress and not args.debug, dry_run=args.dry_run, debug=args.debug)
    run.plan()
    if args.dry_run:
        print_plan(run)
        for line in run.runner_plan():
            print(line)
        return 0
    results = run.execute()
    from luopan.report import to_markdown

    print(to_markdown(run.tables))
    if run.comparison is not None:
        from luopan.compare import to_markdown as compare_markdown
        from luopan.compare import warnings_of

        print(compare_markdown(run.comparison))
        sys.stdout.flush()
        for warning in warnings_of(run.comparison):
            print(f"warning: {warning}", file=sys.stderr)
    elif run.comparison_problem:
        print(f"warning: compare: not written: {run.comparison_problem}", file=sys.stderr)
    print(f"outputs: {run.out}")
    failed = [r for r in results if r.error]
    if failed:
        for r in failed:
            print(f"FAILED {r.model}/{r.dataset}: {r.error}", file=sys.stderr)
            by_error: dict[str, list[str]] = {}
            for item in r.failed_items:  # the same error on many samples is one line
                by_error.setdefault(item["error"], []).append(item["id"])
            for i, (error, ids) in enumerate(by_error.items()):
                if i == 10:
                    print(f"  ... {len(by_error) - 10} more kinds of error in {run.out / 'results'}", file=sys.stderr)
                    break
                if len(ids) == 1:
                    print(f"  {ids[0]}: {error}", file=sys.stderr)
                else:
                    more = f", ... {len(ids) - 3} more" if len(ids) > 3 else ""
                    print(f"  {len(ids)} samples ({', '.join(ids[:3])}{more}): {error}", file=sys.stderr)
        n_items = sum(len(r.failed_items) for r in failed)
        what = f"{len(failed)} of {len(results)} unit(s) failed" + (f" ({n_items} sample(s))" if n_items else "")
        print(f"{what}; see {run.out / 'run.log'}. Rerunning the same command retries only what failed.",
              file=sys.stderr)
        return 1
    return 0


def _compare(args: Any) -> int:
    from pathlib import Path

    from luopan.compare import compare, to_markdown, warnings_of, write

    report = compare(args.run_a, args.run_b, baseline=args.baseline, resamples=args.resamples, seed=args.seed)
    print(to_markdown(report), end="")
    sys.stdout.flush()
    for warning in warnings_of(report):
        print(f"warning: {warning}", file=sys.stderr)
    if args.out:
        md, _ = write(Path(args.out), report)
        print(f"written: {md} and compare.json")
    return 0


def _one_line(args: Any, reg: Any, collect: list[str]) -> Any:
    """The run the one-line options describe, validated like a run file; None after --print-config."""
    import yaml

    from luopan.api import dataset_entry, model_entry
    from luopan.config import resolve
    from luopan.errors import ConfigError
    from luopan.yamlpos import load_located

    if args.file:
        raise ConfigError(f"run: give either a run file ({args.file}) or --model/--dataset, not both")
    models = [m.strip() for arg in args.model for m in arg.split(",") if m.strip()]
    datasets = [d.strip() for arg in args.dataset for d in arg.split(",") if d.strip()]
    if not models or not datasets:
        raise ConfigError("run: a one-line run needs --model and --dataset (e.g. luopan run --model "
                          "smollm2-135m-instruct --dataset cmmlu --limit-per-subset 1)")
    model_entries = []
    for m in models:
        e = model_entry(m)
        if args.kind:
            e["kind"] = args.kind
        if e.get("backend") == "openai" or args.base_url or args.api_key_env or args.rpm:
            params = e.setdefault("params", {})
            for key, value in (("base_url", args.base_url), ("api_key_env", args.api_key_env), ("rpm", args.rpm)):
                if value is not None:
                    params[key] = value
        model_entries.append(e)
    dataset_entries = []
    for d in datasets:
        e = dataset_entry(d, reg.presets["dataset"])
        for key, value in (("limit", args.limit), ("limit_per_subset", args.limit_per_subset), ("shots", args.shots),
                           ("mode", args.mode)):
            if value is not None:
                e[key] = value
        dataset_entries.append(e)
    run: dict[str, Any] = {}
    if args.name:
        run["name"] = args.name
    if args.output_dir:
        run["output_dir"] = args.output_dir
    doc: dict[str, Any] = ({"run": run} if run else {}) | {"models": model_entries, "datasets": dataset_entries}
    text = yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)
    from pathlib import Path

    cfg = resolve(load_located(text, "command line"), reg, base_dir=Path.cwd(), backend=args.backend, collect=collect)
    if args.print_config:
        print(text, end="")
        return None
    return cfg


def _not_a_run(name: str, reg: Any) -> str | None:
    """What ``name`` is when it is not a run file or run preset (``luopan run cmmlu``), with the command that
    would run it."""
    for kind, flag in (("dataset", "--dataset"), ("model", "--model")):
        preset = reg.presets[kind].get(name)
        if preset is not None:
            desc = preset.fields.get("description", "")
            other = "--model smollm2-135m-instruct" if kind == "dataset" else "--dataset demo_mcq"
            return (f"'{name}' is a {kind} preset" + (f" ({desc})" if desc else "") + f", not a run file; to run it: "
                    f"luopan run {other} {flag} {name}" + (" --limit-per-subset 1" if kind == "dataset" else ""))
    return None


def _plugins(reg) -> int:  # type: ignore[no-untyped-def]
    from luopan.preflight import environment_problems

    reg.resolve_all()  # components registered by "module:attr" are imported here, so a broken one shows
    unusable = environment_problems(reg)
    rows = []
    for p in sorted(reg.plugins, key=lambda p: p.name):
        provides = ", ".join([f"{k}:{n}" for k, n in p.components]
                             + [f"command:{c.name}" for c in reg.commands.values() if c.plugin is p]) or "-"
        status = "ok" if p.ok else f"FAILED: {p.error}"
        if p.ok and unusable.get(p.name):
            status = "cannot work here"
        rows.append((p.name, f"{p.distribution} {p.version}".strip(), status, provides))
    w = [max(len(r[i]) for r in rows + [("plugin", "distribution", "status", "")]) for i in range(3)]
    print(f"{'plugin':<{w[0]}}  {'distribution':<{w[1]}}  {'status':<{w[2]}}  provides")
    for r in rows:
        print(f"{r[0]:<{w[0]}}  {r[1]:<{w[1]}}  {r[2]:<{w[2]}}  {r[3]}")
    for p in sorted(reg.plugins, key=lambda p: p.name):  # why a plugin cannot work here, in full
        for problem in unusable.get(p.name, []) if p.ok else []:
            print(f"  {p.name}: {problem}")
    for _, msg in reg.conflicts.values():
        print(f"CONFLICT: {msg}")
    return 0


def _list(reg, kind: str | None) -> int:  # type: ignore[no-untyped-def]
    kinds = [kind] if kind else list(LIST_KINDS)
    for k in kinds:
        if k == "presets":
            for pk, presets in reg.presets.items():
                print(f"{pk} presets:")
                for name, p in sorted(presets.items()):
                    desc = p.fields.get("description", "")
                    print(f"  {name:<28} {desc}  [{p.source}]")
            continue
        comps = reg.components[k[:-1]]
        print(f"{k}:")
        for name, c in sorted(comps.items()):
            print(f"  {name:<28} {c.description}  [{c.plugin.name}, {c.plugin.distribution}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
