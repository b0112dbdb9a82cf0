"""A deterministic fake backend, for kernel tests only: never a stand-in for a real model's behaviour."""

from luopan import hookimpl


@hookimpl
def luopan_register_backends(register):
    from luopan_fake.backend import FakeBackend, FakeParams

    register("fake", FakeBackend, params=FakeParams, description="deterministic fake model (kernel tests only)")
