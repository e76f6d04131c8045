"""mechscope against nnsight and TransformerLens on the same three workloads, one run.

All three run SmolLM2-135M-Instruct in float32 on the CPU with the same
number of threads (one by default: on a CPU shared with other work, two
OpenMP threads per process ran a forward several times slower than one); nnsight and TransformerLens run in their own virtual
environments (``make bench`` creates ``.venv-nnsight`` and ``.venv-tl``)
through ``benchmarks/peers_side.py``, loading the model offline from
mechscope's converted folder (``HF_HUB_OFFLINE=1``). The token ids are
mechscope's, written to one file, so every tool sees the same inputs.

1. ``forward``: batch 4 × 32 tokens, saving ``resid_pre`` and
   ``resid_post`` of all 30 layers (60 sites): ``model.run(ids, save=...)``.
2. ``sweep``: the IOI ``resid_pre`` sweep of `benchmarks/patching.py`, 30
   layers × 14 positions = 420 patches: mechscope's batched
   `activation_patching`.
3. ``attribution``: attribution patching over heads on 8 IOI prompts (ABC
   corruption): `attribution_patching`, which also scores MLPs, neurons and
   resid positions in the same two forwards and one backward; and, as the
   equal-work line, the same two runs saving only ``attn.z`` and its gradient.

Each workload runs once untimed, then is timed `--repeats` times (the sweep
`--sweep-repeats`) and the median is kept; mechscope is timed before and
after the peers, and its runs pooled. The peers' numbers are checked
against mechscope's (saved resids to 1e-3 of their largest value, the
sweep's 420 logit differences to 1e-3, the 270 head scores to 1e-3) so that the comparison is of equal work. The last
lines print each peer's time over mechscope's. A peer that cannot load the
model or run a workload is reported with the reason, and the run goes on.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

import mechscope as ms
from mechscope.core.loading import list_cached
from mechscope.ioi import ioi_dataset
from mechscope.ioi.reproduce import ioi_metric
from mechscope.patching import activation_patching, attribution_patching

ROOT = Path(__file__).resolve().parents[1]
SIDE = Path(__file__).with_name("peers_side.py")
PEERS = {"nnsight": ROOT / ".venv-nnsight", "transformerlens": ROOT / ".venv-tl"}
CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPT = "When Mary and John went to the store, Mary gave a drink to"
TOLERANCE = {"forward": 1e-3, "sweep": 1e-3, "attribution": 1e-3}


def converted_folder(model: ms.Model) -> Path:
    """The HF folder the peers load: the model's own folder, or its converted copy in the cache."""
    if Path(model.source).is_dir():
        return Path(model.source)
    for entry in list_cached():
        if entry.get("weights_sha256") == model.weights_sha256:
            return Path(entry["path"])
    raise SystemExit(f"no converted folder of {model.name} in the cache ({model.source})")


def timed_runs(fn, repeats: int) -> tuple[list[float], object]:
    result = fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return times, result


def mechscope_side(model: ms.Model, t: dict[str, torch.Tensor], args) -> dict:
    """{workload: (seconds of each timed run, numbers)} for mechscope, in this process."""
    n_layers = model.dims.n_layers
    resid = [f"blocks.{i}.resid_pre" for i in range(n_layers)]
    resid += [f"blocks.{i}.resid_post" for i in range(n_layers)]
    io, s = int(t["io"]), int(t["s"])

    def forward() -> torch.Tensor:
        cache = model.run(t["forward_ids"], save=resid).cache
        return torch.stack([cache[name] for name in resid])

    def metric(logits: torch.Tensor) -> torch.Tensor:
        return logits[:, -1, io] - logits[:, -1, s]

    def sweep() -> torch.Tensor:
        return activation_patching(
            model, t["clean"], t["corrupt"], metric, "resid_pre", progress=False
        ).raw

    ioi = ioi_metric(args.ds)

    def attribution() -> torch.Tensor:
        return attribution_patching(model, t["ioi_clean"], t["ioi_corrupt"], ioi).heads

    z = [f"blocks.{i}.attn.z" for i in range(n_layers)]
    n_heads = model.dims.n_heads

    def heads_only() -> torch.Tensor:
        clean = model.run(t["ioi_clean"], save=z)
        values: list[float] = []

        def backward(logits: torch.Tensor) -> torch.Tensor:
            value = ioi(logits).mean()
            values.append(value.item())
            return value

        corrupt = model.run(t["ioi_corrupt"], save=z, save_grad=z, backward=backward)
        denom = ioi(clean.logits).mean().item() - values[0]
        rows = []
        for name in z:
            prod = (clean.cache[name] - corrupt.cache[name]) * corrupt.cache.grads[name]
            rows.append(prod.reshape(*prod.shape[:2], n_heads, -1).sum((0, 1, 3)))
        return torch.stack(rows) / denom

    out = {}
    for name, fn, repeats in (
        ("forward", forward, args.repeats),
        ("sweep", sweep, args.sweep_repeats),
        ("attribution", attribution, args.repeats),
        ("attribution_heads", heads_only, args.repeats),
    ):
        if name.removesuffix("_heads") in args.workloads.split(","):
            out[name] = timed_runs(fn, repeats)
    return out


def run_peer(name: str, inputs: Path, out: Path, args) -> dict:
    python = PEERS[name] / "bin" / "python"
    if not python.exists():
        return {"load_error": f"no environment at {python}: run `make bench` (it creates it)"}
    cmd = [
        str(python), str(SIDE), "--peer", name, "--inputs", str(inputs), "--out", str(out),
        "--repeats", str(args.repeats), "--sweep-repeats", str(args.sweep_repeats),
        "--threads", str(args.threads), "--workloads", args.workloads,
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"load_error": f"{name} side exited {proc.returncode}: {tail}"}
    report = json.loads(lines[-1])
    report["numbers"] = load_file(str(out)) if out.exists() else {}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sweep-repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--prompts", type=int, default=8, help="IOI prompts for attribution")
    parser.add_argument("--peers", default=",".join(PEERS))
    parser.add_argument(
        "--workloads", default="forward,sweep,attribution", help="comma-separated, of these"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = ms.load(args.model)
    folder = converted_folder(model)
    g = torch.Generator().manual_seed(0)
    ds = ioi_dataset(model, args.prompts)
    abc = ds.corrupt("ABC")
    args.ds = ds
    t = {
        "forward_ids": torch.randint(0, model.dims.d_vocab, (4, 32), generator=g),
        "clean": model.to_tokens(CLEAN),
        "corrupt": model.to_tokens(CORRUPT),
        "io": torch.tensor(model.to_single_token(" Mary")),
        "s": torch.tensor(model.to_single_token(" John")),
        "ioi_clean": ds.tokens,
        "ioi_corrupt": abc.tokens,
        "ioi_io": ds.io_ids,
        "ioi_s": ds.s_ids,
    }
    print(
        f"model {model.name} from {folder}, float32, threads {args.threads}, torch {torch.__version__}; "
        f"medians of {args.repeats} (sweep {args.sweep_repeats}) after one warm-up"
    )
    # mechscope is timed before and after the peers and its runs pooled, so that a change in
    # the machine's load while the peers run does not fall on one side only
    before = mechscope_side(model, t, args)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        inputs = Path(tmp) / "inputs.safetensors"
        save_file({k: v.contiguous() for k, v in t.items()}, str(inputs), {"folder": str(folder)})
        for name in args.peers.split(","):
            report = run_peer(name, inputs, Path(tmp) / f"{name}.safetensors", args)
            results[name] = report
            if "load_error" in report:
                print(f"  {name}: cannot load the model offline: {report['load_error']}")
                continue
            print(f"  {name} {report['version']} (load {report['load_s']:.1f} s)")
            for work, entry in report["workloads"].items():
                if "error" in entry:
                    print(f"    {work:<18} cannot run: {entry['error']}")
                    continue
                mine = before[work][1]
                theirs = report["numbers"][work]
                diff = (mine.float() - theirs).abs().max().item()
                # the saved resids are compared relative to their largest value (TransformerLens
                # runs eager attention, HF's default here is SDPA: float32 rounding differs)
                scale = mine.abs().max().item() if work == "forward" else 1.0
                entry["median"] = statistics.median(entry["times"])
                entry["agree"] = diff / scale <= TOLERANCE[work]
                ok = "agree" if entry["agree"] else f"DIFFER (> {TOLERANCE[work]:g})"
                kind = f"relative {diff / scale:.1e}, " if work == "forward" else ""
                print(
                    f"    {work:<18} {entry['median'] * 1000:9.1f} ms   "
                    f"max |difference| from mechscope {kind}{diff:.1e}: {ok}"
                )
    after = mechscope_side(model, t, args)
    ours = {}
    for name, (times, numbers) in before.items():
        pooled = times + after[name][0]
        ours[name] = (statistics.median(pooled), numbers)
        print(
            f"  mechscope {name:<18} {ours[name][0] * 1000:9.1f} ms   (median of {len(pooled)} "
            f"runs: before the peers {statistics.median(times) * 1000:.1f}, after "
            f"{statistics.median(after[name][0]) * 1000:.1f})"
        )
    if "attribution" in before:
        same = (before["attribution"][1] - before["attribution_heads"][1]).abs().max().item()
        print(f"  mechscope attribution_heads gives attribution_patching's heads to {same:.1e}")
    print("peer time / mechscope time (> 1: mechscope faster):")
    for name, report in results.items():
        if "load_error" in report:
            print(f"  {name:<16} no ratios: {report['load_error']}")
            continue
        cells = []
        for work in ("forward", "sweep", "attribution"):
            entry = report["workloads"].get(work, {})
            if "median" not in entry:
                cells.append(f"{work} n/a")
                continue
            cell = f"{work} {entry['median'] / ours[work][0]:.2f}×"
            if work == "attribution":
                cell += f" (heads only {entry['median'] / ours['attribution_heads'][0]:.2f}×)"
            if not entry["agree"]:
                cell += " [numbers differ]"
            cells.append(cell)
        print(f"  {name:<16} " + ", ".join(cells))


if __name__ == "__main__":
    main()
