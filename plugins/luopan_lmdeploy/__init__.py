"""The ``lmdeploy`` backend: ``lmdeploy.pipeline`` in process (TurboMind or PyTorch engine, CUDA). Registration
only: lmdeploy is imported when a run loads the model. The engine has not run on luopan's machines (no GPU); its
request and result translation is tested against LMDeploy's documented interface with a stand-in pipeline
(tests/test_lmdeploy_boundary.py). ``lmdeploy serve api_server`` is used through the ``openai`` backend (preset
``local-lmdeploy``)."""

from luopan import hookimpl


@hookimpl
def luopan_register_backends(register):
    register(
        "lmdeploy",
        "luopan_lmdeploy.backend:LMDeployBackend",
        params="luopan_lmdeploy.backend:LMDeployParams",
        description="lmdeploy.pipeline in process (TurboMind or PyTorch engine, CUDA); generation, likelihood "
        "from get_ppl",
    )
