"""The ``ray`` runner: one evaluation across the workers, GPUs and machines of a Ray cluster.

Install with ``pip install 'luopan[ray]'``; choose it with ``luopan run RUN.yaml --runner ray [--address auto]`` or
``run: {runner: ray, ray: {...}}``. The local runner never imports Ray.
"""

from luopan import hookimpl


@hookimpl
def luopan_register_runners(register):
    register("ray", "luopan_ray.runner:RayRunner", params="luopan_ray.runner:RayParams",
             description="model replicas as Ray actors on a cluster (or a private one on this machine)")
