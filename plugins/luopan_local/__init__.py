"""The local runner: units one after another in this process."""

from luopan import hookimpl


@hookimpl
def luopan_register_runners(register):
    from luopan_local.runner import LocalRunner

    register("local", LocalRunner, description="run units sequentially in this process")
