"""report.html: a self-contained HTML report of a run (leaderboard, tables, radar charts, a sample browser,
side-by-side models, operations and provenance), written into every run folder after the run and rebuilt
from a finished run folder by ``luopan report RUN_DIR`` (docs/report.md).

The page is one file that works from ``file://`` offline: no CDN, no server, charts as inline SVG. The
per-sample data lives beside it in ``report/<model>/<dataset>.js`` (loaded when its samples are opened).
"""

from luopan import hookimpl


@hookimpl(trylast=True)  # after the plugins that add tables to the summary (arena, needle)
def luopan_run_finish(run, results):
    import logging

    from luopan_report.build import write_report

    try:
        write_report(run.out)
    except Exception:  # a report that cannot be written must not fail a run whose answers are all in
        logging.getLogger("luopan.report").exception("report: report.html could not be written")


@hookimpl
def luopan_report(out):
    from luopan_report.build import write_report

    return [write_report(out)]
