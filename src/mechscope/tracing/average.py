"""Causal traces averaged over many facts, by token kind (Meng et al. 2022, figure 2).

Each fact's prompt is split into six kinds of token: the first, middle and
last subject tokens, the first token after the subject, the further tokens,
and the last token. A fact's indirect effect at each kind (the mean over its
positions of that kind) is averaged over the facts that have the kind: a
one-token subject is both first and last subject token and has no middle;
a prompt whose subject is followed by one token only has no further tokens.
The result, `AverageTrace`, lives in `tracing.results` and is re-exported here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm

from ..core.model import Model
from ..errors import InputError
from .facts import Fact
from .results import KIND_NAMES, TOKEN_KINDS, AverageTrace, token_kinds
from .trace import CausalTrace, trace_fact

__all__ = ["KIND_NAMES", "TOKEN_KINDS", "AverageTrace", "token_kinds", "trace_facts"]


def trace_facts(
    model: Model,
    facts: Sequence[Fact],
    *,
    kinds: Sequence[str] = ("hidden", "mlp", "attn"),
    samples: int = 10,
    noise: float | None = None,
    window: int = 10,
    seed: int = 0,
    out: str | Path | None = None,
    progress: bool = True,
    engine: str = "local",
    address: str | None = None,
    workers: int | None = None,
    threads: int | None = None,
) -> tuple[AverageTrace, list[CausalTrace]]:
    """Trace each fact, then average by token kind; with `out`, every trace is saved as it ends.

    Tracing resumes: a fact whose trace is already in ``out/facts/`` is read back.
    ``engine="ray"`` spreads the facts over `workers` Ray tasks of `threads`
    torch threads (`mechscope.engine.tracing`); the traces are the local
    engine's at `threads` threads (fact i is traced with seed ``seed + i``
    wherever it runs). With the local engine, `threads` sets torch's threads.

    Example::

        facts = sample_facts(geography_facts("country_capital"), 20)
        avg, traces = trace_facts(model, facts, out="runs/trace-capitals")
        avg.peak("mlp")  # (token kind, layer, effect)
    """
    from ..engine import check_engine, torch_threads

    check_engine(engine, address=address, workers=workers, threads=threads)
    if not facts:
        raise InputError("no facts to trace")
    folder = Path(out) / "facts" if out is not None else None
    args = {"kinds": kinds, "samples": samples, "noise": noise, "window": window, "seed": seed}
    if engine == "ray":
        from ..engine.tracing import trace_facts_on_ray

        traces = trace_facts_on_ray(
            model, facts, folder=folder, address=address, workers=workers, threads=threads or 1,
            progress=progress, **args,
        )  # fmt: skip
    else:
        bar = tqdm(facts, desc="facts", unit="fact", disable=not progress)
        with torch_threads(threads):
            traces = [trace_or_load(model, fact, i, folder, **args) for i, fact in enumerate(bar)]
    avg = AverageTrace.of(traces)
    if out is not None:
        avg.save(Path(out) / "average.safetensors")
    return avg, traces


def trace_or_load(
    model: Model,
    fact: Fact,
    i: int,
    folder: Path | None,
    *,
    kinds: Sequence[str],
    samples: int,
    noise: float | None,
    window: int,
    seed: int,
) -> CausalTrace:
    """Fact `i` of a set: read back from ``folder/<i>.safetensors`` if traced there, else traced
    (with seed ``seed + i``) and saved there atomically.

    Example::

        tr = trace_or_load(model, fact, 0, Path("runs/t/facts"), kinds=("mlp",), samples=10,
                           noise=None, window=10, seed=0)  # runs/t/facts/0000.safetensors
    """
    target = folder / f"{i:04d}.safetensors" if folder is not None else None
    if target is not None and target.exists():
        tr = CausalTrace.load(target)
        if tr.fact == fact:
            return tr
    tr = trace_fact(
        model, fact, kinds=kinds, samples=samples, noise=noise, window=window, seed=seed + i
    )
    if target is not None:
        tr.save(target)  # atomic: a temporary file renamed into place
    return tr
