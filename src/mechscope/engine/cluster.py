"""Ray underneath the engine: joining or starting a cluster, running shard tasks, their progress.

`ray_session` connects this process to a cluster (or reuses the connection
it already has); `run_shards` runs one task per shard with retries and feeds
one driver-side tqdm bar from the counts every task reports (small files in
the shards' folder). Tasks are plain module-level functions: Ray ships them by reference, so
every worker needs mechscope installed (true of a local cluster).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from tqdm.auto import tqdm

from ..errors import MechscopeError
from . import EngineError

RETRIES = 3  # a shard whose worker dies is run again up to this many times
POLL_S = 0.25  # how often the driver reads the shards' progress
REPORT_S = 0.2  # how often a task sends its progress at most
OBJECT_STORE_BYTES = 256 * 2**20  # a local cluster's object store: shards return small records


# Ray announces a node by the host's network address even when it is alone on this machine;
# with cluster mode off in its own constant it takes the loopback (read when ray is imported)
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def _is_loopback(address: str | None) -> bool:
    host = (address or "").rsplit(":", 1)[0].removeprefix("ray://")
    return not address or address == "local" or host in ("127.0.0.1", "localhost", "::1", "[::1]")


def import_ray(address: str | None = None) -> ModuleType:
    """The `ray` module, or an EngineError saying how to install it.

    For a cluster on this machine alone (no `address`, or a loopback one) Ray
    is kept on 127.0.0.1: every node, worker and object store binds the loopback.

    Example: ``ray = import_ray()`` → the module (EngineError if Ray is not installed).
    """
    if _is_loopback(address):
        os.environ.setdefault(LOOPBACK_ENV, "0")
    try:
        import ray
    except ImportError:
        raise EngineError(
            "engine='ray' needs Ray, which is not installed: pip install 'mechscope[ray]'"
        ) from None
    return ray


@contextlib.contextmanager
def ray_session(address: str | None = None, cpus: int | None = None) -> Iterator[ModuleType]:
    """Ray, connected to the cluster at `address` or to a new one on this machine alone.

    A process already connected keeps its connection (and `address` is not
    used). A cluster or connection made here is shut down on exit. A local
    cluster gets `cpus` CPUs (default: all), workers at normal priority, no
    dashboard, no usage stats, and quiet logs; it is one node of this machine
    on 127.0.0.1 (see `import_ray`).

    >>> with ray_session(cpus=2) as ray:  # doctest: +SKIP
    ...     ray.cluster_resources()["CPU"]
    2.0
    """
    ray = import_ray(address)
    if ray.is_initialized():
        yield ray
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not address:
        # Ray starts workers at nice 15 (to keep its driver responsive); here the workers do the
        # job itself, and on a shared machine they should get the CPU a local run would
        os.environ.setdefault("RAY_worker_niceness", "0")
    quiet: dict[str, Any] = {
        "include_dashboard": False,
        "logging_level": logging.ERROR,
        "log_to_driver": False,
    }
    try:
        if address:
            ray.init(address=address, **quiet)
        else:
            ray.init(
                address="local",
                num_cpus=cpus,
                object_store_memory=OBJECT_STORE_BYTES,
                **quiet,
            )
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = f"the Ray cluster at {address!r}" if address else "a local Ray cluster"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise EngineError(f"cannot start or join {where}: {first}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def cluster_cpus(ray: ModuleType) -> int:
    """CPUs in the connected cluster.

    Example: ``with ray_session(cpus=2) as ray: cluster_cpus(ray)`` → 2.
    """
    return int(ray.cluster_resources().get("CPU", 1))


def split(ray: ModuleType, items: int, workers: int | None, threads: int) -> list[tuple[int, int]]:
    """`items` in contiguous ``(lo, hi)`` runs, one per task: `workers` of them (default: the
    cluster's CPUs // `threads`), never more than `items`, sizes differing by at most one.

    >>> split(ray, 5, 2, 1)  # doctest: +SKIP
    [(0, 2), (2, 5)]
    """
    n = max(1, min(workers or cluster_cpus(ray) // threads, items))
    cuts = [i * items // n for i in range(n + 1)]
    return list(zip(cuts, cuts[1:], strict=False))


def note_attempt(file: Path) -> None:
    """Add this worker's pid to `file`: one line per attempt, so a retry after a kill adds one.

    Example: ``note_attempt(Path("shards/shard-0.attempts"))``, then `attempts` reads it.
    """
    with open(file, "a") as f:
        f.write(f"{os.getpid()}\n")


def attempts(file: Path) -> list[int]:
    """The pids `note_attempt` wrote to `file`, first attempt first.

    Example: ``attempts(Path("shards/shard-0.attempts"))`` → ``[pid]`` after one attempt.
    """
    return [int(p) for p in file.read_text().split()]


class Reporter:
    """What a task calls with its shard's count so far (tokens, facts…).

    It writes the count to a small file, at most every REPORT_S seconds, and
    the driver sums the files: no extra process (an actor would be one more
    worker to start), and the shards' folders must be shared anyway.

    Example::

        report = Reporter("shards/shard-0.progress")
        report(1024, final=True)    # the file now reads "1024"
    """

    def __init__(self, file: str) -> None:
        self.file, self.last = file, 0.0

    def __call__(self, done: int, *, final: bool = False) -> None:
        now = time.perf_counter()
        if final or now - self.last >= REPORT_S:
            tmp = f"{self.file}.{os.getpid()}.tmp"
            Path(tmp).write_text(str(done))
            os.replace(tmp, self.file)
            self.last = now


def _reported(files: Sequence[Path]) -> int:
    total = 0
    for file in files:
        with contextlib.suppress(FileNotFoundError, ValueError):
            total += int(file.read_text())
    return total


def run_shards(
    ray: ModuleType,
    task: Callable[..., Any],
    args: Sequence[tuple[Any, ...]],
    *,
    folder: Path,
    threads: int,
    total: int,
    unit: str,
    desc: str,
    progress: bool,
    retries: int = RETRIES,
) -> list[Any]:
    """Run ``task(reporter, shard, *args[shard])`` for every shard as Ray tasks; their results in order.

    Each task gets `threads` CPUs, and is retried up to `retries` times when
    its worker dies (not when it raises: a user error is raised here as
    itself). One bar of `total` `unit`s shows the sum of the shards' reports,
    which go through files ``shard-<i>.progress`` in `folder`.

    Example (``count`` a module-level ``def count(report, shard, n): report(n); return n``)::

        with ray_session(cpus=2) as ray:
            run_shards(ray, count, [(10,), (20,)], folder=Path("shards"), threads=1, total=30,
                       unit="item", desc="count", progress=True)    # [10, 20]
    """
    remote = ray.remote(num_cpus=threads, max_retries=retries)(task)
    files = [folder / f"shard-{i}.progress" for i in range(len(args))]
    for file in files:
        file.unlink(missing_ok=True)
    refs = [
        remote.remote(Reporter(str(f)), i, *a)
        for i, (f, a) in enumerate(zip(files, args, strict=True))
    ]
    bar = tqdm(total=total, unit=unit, unit_scale=True, desc=desc, disable=not progress)
    pending = list(refs)
    try:
        while pending:
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=POLL_S)
            bar.update(_reported(files) - bar.n)
        return [_result(ray, ref, i, retries) for i, ref in enumerate(refs)]
    finally:
        bar.close()
        for ref in pending:
            ray.cancel(ref, force=True)


def _result(ray: ModuleType, ref: Any, shard: int, retries: int) -> Any:
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as e:
        cause = getattr(e, "cause", None)
        if isinstance(cause, MechscopeError):
            raise cause from None
        raise
    except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError) as e:
        raise EngineError(
            f"shard {shard}'s worker died {retries + 1} times ({type(e).__name__}); "
            "run again to resume from its checkpoint"
        ) from None
