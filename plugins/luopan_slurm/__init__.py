"""The ``slurm`` runner: units and shards as one Slurm job array, through submitit.

Install with ``pip install 'luopan[slurm]'``; choose it with ``luopan run RUN.yaml --runner slurm`` or
``run: {runner: slurm, slurm: {partition: ..., gpus_per_task: 1, time_min: 120}}``.
"""

from luopan import hookimpl


@hookimpl
def luopan_register_runners(register):
    register("slurm", "luopan_slurm.runner:SlurmRunner", params="luopan_slurm.runner:SlurmParams",
             description="units as one Slurm job array (submitit); per-task caches merged by the driver")
