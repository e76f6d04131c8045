"""Harvests on a real local Ray cluster (this machine): sharded over workers they are the local
harvest bit for bit, also when a worker is killed by pid in the middle of its shard."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import ray
import torch
from safetensors.torch import load_file

import mechscope as ms
from mechscope.engine import EngineError, check_engine
from mechscope.errors import InputError
from mechscope.harvest import harvest
from mechscope.harvest.state import STATE_FILE
from mechscope.testing import run_cli as mechscope
from mechscope.testing import tiny_model

# 192 windows in batches of 4: two shards of 24 batches, a checkpoint every 2
ARGS: dict[str, Any] = dict(
    sites=["blocks.*.mlp.post", "blocks.0.attn.z"],
    tokens=192 * 16,
    window=16,
    k=5,
    n_random=3,
    batch_size=4,
    hist_every=2,
    checkpoint_batches=2,
)

# the Hold feature below is defined here, not in an installed module: ship it by value
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


class Hold:
    """A feature that passes its site through and, from its `after`-th call on, waits while
    `file` exists (saying so in ``<file>.held-<pid>``): it holds a shard still after a
    checkpoint, so the test can kill it there."""

    def __init__(self, file: Path, after: int) -> None:
        self.file, self.after, self.calls = str(file), after, 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls >= self.after and os.path.exists(self.file):
            Path(f"{self.file}.held-{os.getpid()}").touch()
        deadline = time.monotonic() + 300
        while self.calls >= self.after and os.path.exists(self.file):
            assert time.monotonic() < deadline, "nobody removed the hold file"
            time.sleep(0.01)
        return x


def held(file: Path) -> dict[str, tuple[str, Callable[[torch.Tensor], torch.Tensor]]]:
    # calls: 1 sizes the sites, then one per batch; the 6th is batch 5, after the checkpoint of batch 4
    return {"held": ("blocks.1.resid_post", Hold(file, after=6))}


def wait_for(what: str, ok: Callable[[], Any], seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while not ok():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def assert_same_harvest(a: Path, b: Path) -> None:
    sa, sb = load_file(str(a / STATE_FILE)), load_file(str(b / STATE_FILE))
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key
    for table in ("units", "examples", "windows", "token_hits"):
        assert pq.read_table(a / f"{table}.parquet").equals(pq.read_table(b / f"{table}.parquet"))
    assert (a / "windows.bin").read_bytes() == (b / "windows.bin").read_bytes()
    assert (a / "config.json").read_bytes() == (b / "config.json").read_bytes()


@pytest.fixture(scope="module")
def one_pass(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The local engine's harvest (with the Hold feature, never holding: no file), on one
    thread as each Ray worker (the last bits of CPU matrix products depend on the count)."""
    root = tmp_path_factory.mktemp("local")
    out = root / "one"
    harvest(
        tiny_model("llama"),
        "fortunes",
        out=out,
        progress=False,
        threads=1,
        **ARGS,
        features=held(root / "none"),
    )
    return out


def test_two_ray_workers_give_the_local_harvest_bit_for_bit(one_pass: Path, tmp_path: Path) -> None:
    out = tmp_path / "ray"
    store = harvest(
        tiny_model("llama"),
        "fortunes",
        out=out,
        engine="ray",
        workers=2,
        progress=False,
        **ARGS,
        features=held(tmp_path / "none"),
    )
    assert_same_harvest(one_pass, out)
    shards = store.run["engine"]["shards"]
    assert [s["windows"] for s in shards] == [[0, 96], [96, 192]]
    assert shards[0]["pids"][0] != shards[1]["pids"][0]  # two worker processes
    assert os.getpid() not in {s["pids"][0] for s in shards}
    assert not (tmp_path / ".ray.shards").exists()  # shards and the shipped model are cleaned up


def test_a_worker_killed_mid_shard_is_retried_and_resumes_its_checkpoint(
    one_pass: Path, tmp_path: Path
) -> None:
    hold = tmp_path / "hold"
    hold.touch()
    out = tmp_path / "killed"
    shards = tmp_path / ".killed.shards"
    checkpoint, pids = shards / ".shard-0.partial" / STATE_FILE, shards / "shard-0.pids"
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(
            harvest,
            tiny_model("llama"),
            "fortunes",
            out=out,
            engine="ray",
            workers=2,
            progress=False,
            **ARGS,
            features=held(hold),
        )
        wait_for("shard 0's worker", lambda: pids.exists() and pids.read_text().strip())
        (pid,) = (int(p) for p in pids.read_text().split())
        wait_for("shard 0 to hold in batch 5", Path(f"{hold}.held-{pid}").exists)
        assert checkpoint.exists() and not running.done()
        os.kill(pid, signal.SIGKILL)
        wait_for("the killed worker to go", lambda: not _alive(pid))
        hold.unlink()
        store = running.result(timeout=300)
    assert_same_harvest(one_pass, out)
    first = store.run["engine"]["shards"][0]
    assert first["pids"][0] == pid and len(first["pids"]) == 2  # Ray ran it again
    assert first["resumed_from_window"] == 16  # from the checkpoint after batch 4
    assert store.run["engine"]["shards"][1]["resumed_from_window"] is None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a killed child of the raylet stays a zombie until reaped: that is gone too
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(") ")[-1][0] != "Z"


def test_a_user_error_in_a_shard_is_raised_as_itself(tmp_path: Path) -> None:
    text = tmp_path / "short.txt"
    text.write_text("Only a few words of text here.\n")
    with pytest.raises(InputError, match="has only .* windows"):
        harvest(
            tiny_model("llama"),
            text,
            out=tmp_path / "h",
            engine="ray",
            workers=2,
            progress=False,
            **ARGS,
        )
    assert not (tmp_path / "h").exists()


def test_engine_options_are_checked() -> None:
    check_engine("ray", address="127.0.0.1:6379", workers=2, threads=1)
    with pytest.raises(EngineError, match="unknown engine 'spark'; valid: local, ray"):
        check_engine("spark")
    with pytest.raises(EngineError, match="workers is an option of engine='ray'"):
        check_engine("local", workers=2)
    with pytest.raises(EngineError, match="workers must be at least 1"):
        check_engine("ray", workers=0)
    with pytest.raises(InputError, match="drop shard"):
        harvest(tiny_model("llama"), "fortunes", out="x", engine="ray", shard=(0, 2), **ARGS)


def test_cli_joins_the_cluster_by_address_and_gives_the_local_harvest(tmp_path: Path) -> None:
    folder = tmp_path / "tiny"
    model = tiny_model("llama")
    model.hf.save_pretrained(folder)
    model.tokenizer.save_pretrained(folder)
    args = ["--corpus", "fortunes", "--tokens", "1024", "--window", "16", "--batch-size", "4"]
    args += ["--k", "5", "--random", "3"]
    address = ray.get_runtime_context().gcs_address
    res = mechscope(
        "harvest", str(folder), *args, "--out", str(tmp_path / "ray"), "--engine", "ray",
        "--address", address, "--workers", "2", cache=tmp_path,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert "tokens/s" in res.stdout
    local = harvest(
        ms.load(str(folder)), "fortunes", out=tmp_path / "local", tokens=1024, window=16,
        batch_size=4, k=5, n_random=3, progress=False, threads=1,
    )  # fmt: skip
    assert_same_harvest(local.path, tmp_path / "ray")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--engine", "spark"], "error: unknown engine 'spark'; valid: local, ray"),
        (["--workers", "0", "--engine", "ray"], "error: workers must be at least 1, got 0"),
    ],
)
def test_cli_bad_engine_options_are_one_line_exit_2(
    args: list[str], message: str, tmp_path: Path
) -> None:
    res = mechscope("harvest", "no-such-model", *args, cache=tmp_path)
    assert res.returncode == 2
    assert res.stderr.strip().startswith(message) and len(res.stderr.strip().splitlines()) == 1


def test_the_local_cluster_stays_on_the_loopback() -> None:
    """Every address the cluster announces is 127.0.0.1 (nothing listens on the host's network)."""
    assert ray.is_initialized()
    assert ray.util.get_node_ip_address() == "127.0.0.1"
    assert ray.get_runtime_context().gcs_address.startswith("127.0.0.1:")
    assert {node["NodeManagerAddress"] for node in ray.nodes()} == {"127.0.0.1"}
