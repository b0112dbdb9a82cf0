"""The local runner: units one after another in this process."""

from luopan import hookimpl


@hookimpl
def luopan_register_runners(register):
    register("local", "luopan_local.runner:LocalRunner", description="run units sequentially in this process")
