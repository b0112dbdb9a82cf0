"""A deterministic fake backend, for kernel tests only: never a stand-in for a real model's behaviour."""

from luopan import hookimpl


@hookimpl
def luopan_register_backends(register):
    register(
        "fake",
        "luopan_fake.backend:FakeBackend",
        params="luopan_fake.backend:FakeParams",
        description="deterministic fake model (kernel tests only)",
    )
