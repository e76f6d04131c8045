"""Shared fixtures: tiny random models of every family, and the real default model once."""

from __future__ import annotations

import os

from jaxtyping import install_import_hook

# the test clusters of Ray stay on the loopback (see mechscope.engine.cluster.import_ray)
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

# under pytest-xdist each worker (and every process it starts) takes its share of the cores,
# so that two workers on two cores do not fight over four torch threads
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
_THREADS = max(1, (os.cpu_count() or 1) // _WORKERS)
if _WORKERS > 1:
    for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_name, str(_THREADS))

# shapes annotated with jaxtyping are checked at run time, under pytest only
# (mechscope's packages import lazily: the core, which `import mechscope` imported eagerly
# before, is imported here under the hook; the techniques are imported later, unchecked)
with install_import_hook("mechscope", "beartype.beartype"):
    import mechscope.core.cache
    import mechscope.core.interventions
    import mechscope.core.model
    import mechscope.core.resume
    import mechscope.core.tokens
    import mechscope.core.trace  # noqa: F401

import pytest  # noqa: E402
import torch  # noqa: E402

if _WORKERS > 1:
    torch.set_num_threads(_THREADS)

from mechscope.testing import tiny_model  # noqa: E402

ARCHS = ["llama", "gpt2", "gpt_neox", "gemma3"]


@pytest.fixture(params=ARCHS)
def tiny(request: pytest.FixtureRequest):
    """Each tiny family in turn (2 layers, d_model 32; llama and gemma3 use GQA)."""
    return tiny_model(request.param)


@pytest.fixture
def llama():
    return tiny_model("llama")


@pytest.fixture
def ids() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randint(3, 259, (3, 11), generator=g)


@pytest.fixture(scope="session")
def smollm2():
    """The real default model, loaded once per session (integration tests only)."""
    import mechscope

    return mechscope.load("smollm2-135m")


@pytest.fixture(scope="session")
def smollm2_harvest(smollm2, tmp_path_factory: pytest.TempPathFactory):
    """Every MLP neuron of the default model over 2048 tokens of the default corpus (integration)."""
    from mechscope.harvest import harvest

    out = tmp_path_factory.mktemp("smollm2") / "harvest"
    return harvest(smollm2, "default", out=out, tokens=2048, batch_size=32, progress=False)
