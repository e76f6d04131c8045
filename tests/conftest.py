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


# --- the guard on every model built in a test --------------------------------------------

FULL_DIGEST_PARAMS = 20_000_000  # up to this many parameters the weights' bytes are hashed


def _digest(model) -> str:  # noqa: ANN001
    """The weights' bytes (small models), or each tensor's storage, version and shape (large:
    an in-place change bumps the version, a swapped tensor its storage)."""
    import hashlib

    h = hashlib.sha256()
    tensors = [*model.hf.named_parameters(), *model.hf.named_buffers()]
    full = sum(t.numel() for _, t in tensors) <= FULL_DIGEST_PARAMS
    with torch.no_grad():
        for name, t in tensors:
            h.update(name.encode())
            if full:
                h.update(
                    t.detach()
                    .to("cpu")
                    .reshape(-1)
                    .contiguous()
                    .view(torch.uint8)
                    .numpy()
                    .tobytes()
                )
            else:
                h.update(f"{t.data_ptr()}:{t._version}:{tuple(t.shape)}:{t.dtype}".encode())
    return h.hexdigest()


def _attn(model) -> str | None:  # noqa: ANN001
    return getattr(getattr(model.hf, "config", None), "_attn_implementation", None)


HOOK_KINDS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def _hooks(model) -> list[str]:  # noqa: ANN001
    return [
        f"{name or '<root>'}.{kind}"
        for name, module in model.hf.named_modules()
        for kind in HOOK_KINDS
        if getattr(module, kind, None)
    ]


def _global_hooks() -> list[str]:
    from torch.nn.modules import module as m

    return [k for k in HOOK_KINDS if getattr(m, f"_global{k}", None)]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "changes_weights: the test changes a model's weights on purpose (the guard "
        "then checks only hooks and the attention implementation)",
    )


@pytest.fixture(autouse=True)
def model_guard(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    """Fail a test that leaves a model it built with hooks, other weights or attention.

    Every `Model` constructed during the test is recorded with a digest of its weights and
    its attention implementation; afterwards no module may carry a forward, pre-forward or
    backward hook (nor torch a global one), and weights and attention must be as they were.
    """
    import weakref

    from mechscope.core.model import Model

    seen: list = []
    init = Model.__init__

    def recording_init(self, *args, **kwargs) -> None:  # noqa: ANN001
        init(self, *args, **kwargs)
        seen.append((weakref.ref(self), _digest(self), _attn(self)))

    monkeypatch.setattr(Model, "__init__", recording_init)
    before_global = _global_hooks()
    yield seen
    weights = request.node.get_closest_marker("changes_weights") is None
    for ref, digest, attn in seen:
        model = ref()
        if model is None:
            continue
        assert not _hooks(model), f"hooks left on {model.name}: {_hooks(model)}"
        assert _attn(model) == attn, f"attention implementation of {model.name} changed"
        if weights:
            assert _digest(model) == digest, f"weights of {model.name} changed"
    assert _global_hooks() == before_global, "a global module hook was left registered"
