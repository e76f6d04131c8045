"""Engines: where sharded work runs. ``"local"`` (this process, the default) or ``"ray"``.

The Ray engine splits a job into shards, runs each as a Ray task on a
cluster (joined at an address, or a local one started on this machine), retries
a shard whose worker died, shows one progress bar in the driver fed by every
shard, and hands the shards' results back to be merged exactly. Ray is an
optional extra: ``pip install 'mechscope[ray]'``.

Example::

    import mechscope as ms
    from mechscope.harvest import harvest
    store = harvest(ms.load(), "default", out="runs/h", tokens=10**6, engine="ray", workers=4)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from ..errors import MechscopeError

ENGINES = ("local", "ray")


class EngineError(MechscopeError):
    """An engine option is wrong, or the engine cannot run (Ray missing, cluster unreachable).

    Example: ``check_engine("gpu")`` raises EngineError("unknown engine 'gpu'; valid: local, ray").
    """


def check_engine(
    engine: str,
    *,
    address: str | None = None,
    workers: int | None = None,
    threads: int | None = None,
) -> None:
    """Raise EngineError unless the engine options go together.

    >>> check_engine("ray", workers=2)
    """
    if engine not in ENGINES:
        raise EngineError(f"unknown engine {engine!r}; valid: {', '.join(ENGINES)}")
    if engine == "local" and (address is not None or workers is not None):
        given = "address" if address is not None else "workers"
        raise EngineError(f"{given} is an option of engine='ray'; the local engine has none")
    if workers is not None and workers < 1:
        raise EngineError(f"workers must be at least 1, got {workers}")
    if threads is not None and threads < 1:
        raise EngineError(f"threads must be at least 1, got {threads}")


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op threads set to `threads` for a block (None: unchanged), then restored.

    CPU matrix products split their sums by thread count, so the last bits of
    a result depend on it: an engine's results equal the local engine's at
    the same threads per process.

    >>> with torch_threads(1):  # doctest: +SKIP
    ...     model.run(ids)
    """
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


__all__ = ["ENGINES", "EngineError", "check_engine", "torch_threads"]
