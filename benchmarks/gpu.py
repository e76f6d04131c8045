"""The GPU check: exactness, hook overhead, harvest, SAE training and the patching sweep on CUDA, one run.

On a CUDA device, with SmolLM2-135M-Instruct loaded by
``ms.load(dtype=torch.bfloat16, device="cuda")``, it measures:

1. exactness: the largest |logit difference| of ``model.run`` (nothing
   saved, and every resid site saved) against a plain HF model loaded
   separately from the same folder in bfloat16 on the same device (target 0);
2. hook overhead: a forward saving every ``resid_pre`` and ``resid_post``
   over plain ``model.hf`` on the same batch (interleaved repeats, medians;
   target ≤ 1.05);
3. harvest throughput (`mechscope.harvest.harvest`, every MLP neuron, top-20)
   over plain forwards with logits over the same windows (target ≥ 0.85);
4. SAE training tokens/s (`train_sae`, TopK, on activations recorded on the
   device), and that rate over the plain forward's tokens/s;
5. the IOI ``resid_pre`` sweep of `benchmarks/patching.py` (420 patches):
   one forward per patch over mechscope's batched `activation_patching`
   (target ≥ 10×), with the largest difference between the two.

Each part runs in its own try/except: a part that fails prints its error and
the rest go on, and a table of every figure closes the run. Without CUDA it
prints one line and exits 0. ``--cpu-smoke`` runs every code path on the CPU
with tiny sizes, in float32 unless ``--dtype`` says otherwise (a check of this
script, not a measurement).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

import mechscope as ms

CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPT = "When Mary and John went to the store, Mary gave a drink to"

# workload sizes: the GPU run, and the CPU smoke run that only checks the code paths
SIZES = {
    "gpu": {"batch": 32, "tokens": 256, "reps": 20, "harvest_batches": 64, "sae_rows": 1 << 17,
            "sae_width": 16384, "sae_batch": 4096, "sae_steps": 30, "sweep_layers": None},
    "smoke": {"batch": 2, "tokens": 16, "reps": 2, "harvest_batches": 2, "sae_rows": 512,
              "sae_width": 256, "sae_batch": 128, "sae_steps": 3, "sweep_layers": 1},
}  # fmt: skip


class Check:
    """Runs the parts, keeps each figure for the closing table, and survives a part that fails."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.rows: list[tuple[str, str, str, str]] = []  # (figure, value, target, verdict)

    def sync(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()

    def seconds(self, fn: Callable[[], object]) -> float:
        self.sync()
        start = time.perf_counter()
        fn()
        self.sync()
        return time.perf_counter() - start

    def record(self, figure: str, value: str, target: str = "", met: bool | None = None) -> None:
        verdict = "" if met is None else ("met" if met else "NOT met")
        self.rows.append((figure, value, target, verdict))
        print(f"  {figure}: {value}" + (f" (target {target}: {verdict})" if target else ""))

    def part(self, title: str, fn: Callable[[], None]) -> None:
        print(f"{title}:", flush=True)
        start = time.perf_counter()
        try:
            fn()
        except Exception as exc:  # one failing part must not cost the others' figures
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            line = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            where = f"{Path(frame.filename).name}:{frame.lineno}"
            print(f"  FAILED: {line} (at {where})")
            self.rows.append((title, "failed", "", f"{type(exc).__name__} at {where}"))
        print(f"  ({time.perf_counter() - start:.1f} s)", flush=True)

    def table(self) -> None:
        widths = [
            max(len(r[i]) for r in [("figure", "value", "target", ""), *self.rows])
            for i in range(3)
        ]
        print("\nsummary")
        print(
            f"  {'figure':<{widths[0]}}  {'value':>{widths[1]}}  {'target':<{widths[2]}}  verdict"
        )
        for figure, value, target, verdict in self.rows:
            print(
                f"  {figure:<{widths[0]}}  {value:>{widths[1]}}  {target:<{widths[2]}}  {verdict}"
            )


def converted_folder(model: ms.Model) -> Path:
    """The HF folder of `model`: its own, or its converted copy in mechscope's cache."""
    from mechscope.core.loading import list_cached

    if Path(model.source).is_dir():
        return Path(model.source)
    for entry in list_cached():
        if entry.get("weights_sha256") == model.weights_sha256:
            return Path(entry["path"])
    raise FileNotFoundError(f"no converted folder of {model.name} in the cache")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument(
        "--dtype", default=None, help="bfloat16 (default on CUDA) or float32 (default on the CPU)"
    )
    parser.add_argument("--parts", default="1,2,3,4,5", help="which parts to run, e.g. 1,5")
    parser.add_argument(
        "--cpu-smoke", action="store_true", help="every path on the CPU, tiny sizes"
    )
    args = parser.parse_args()
    if not args.cpu_smoke and not torch.cuda.is_available():
        print(
            "no CUDA device: benchmarks/gpu.py measures nothing here (--cpu-smoke checks its code)"
        )
        return
    device = "cpu" if args.cpu_smoke else "cuda"
    if args.cpu_smoke:
        torch.set_num_threads(1)  # a shared CPU runs one thread per process faster than two
    size = SIZES["smoke" if args.cpu_smoke else "gpu"]
    # bfloat16 matmuls are many times slower than float32 on a small CPU; the smoke run checks
    # the code paths, so it takes float32 unless told otherwise
    dtype = getattr(torch, args.dtype or ("float32" if args.cpu_smoke else "bfloat16"))
    check = Check(device)
    started = time.perf_counter()
    model = ms.load(args.model, dtype=dtype, device=device)
    where = torch.cuda.get_device_name() if device == "cuda" else "CPU (smoke run: sizes are tiny)"
    print(
        f"model {model.name}, {str(dtype).removeprefix('torch.')} on {where}, torch {torch.__version__}"
    )
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.dims.d_vocab, (size["batch"], size["tokens"]), generator=g)
    ids = ids.to(device)
    n_layers = model.dims.n_layers
    resid = [f"blocks.{i}.{s}" for s in ("resid_pre", "resid_post") for i in range(n_layers)]
    plain_tokens_per_s: list[float] = []

    def exactness() -> None:
        from transformers import AutoModelForCausalLM

        hf = AutoModelForCausalLM.from_pretrained(converted_folder(model), dtype=dtype).to(device)
        hf.eval()
        with torch.no_grad():
            ref = hf(ids, use_cache=False).logits
        bare = (model.run(ids).logits - ref).abs().max().item()
        saved = (model.run(ids, save=resid).logits - ref).abs().max().item()
        check.record("max |logit diff| vs HF, nothing saved", f"{bare:.3g}", "0", bare == 0)
        check.record("max |logit diff| vs HF, resids saved", f"{saved:.3g}", "0", saved == 0)
        del hf

    def overhead() -> None:
        def plain() -> None:
            with torch.no_grad():
                model.hf(ids, use_cache=False)

        def hooked() -> None:
            model.run(ids, save=resid)

        plain(), hooked()  # warm-up
        times: dict[str, list[float]] = {"plain": [], "hooked": []}
        for _ in range(size["reps"]):
            times["plain"].append(check.seconds(plain))
            times["hooked"].append(check.seconds(hooked))
        p, h = statistics.median(times["plain"]), statistics.median(times["hooked"])
        print(
            f"  batch {tuple(ids.shape)}: plain {p * 1000:.2f} ms, {len(resid)} resids saved {h * 1000:.2f} ms"
        )
        check.record(
            "hook overhead (every resid saved / plain HF)", f"{h / p:.3f}", "≤ 1.05", h / p <= 1.05
        )

    def harvest_throughput() -> None:
        from mechscope.harvest import harvest, windows

        batch, window = 32 if device == "cuda" else 2, 64 if device == "cuda" else 16
        n_windows = size["harvest_batches"] * batch
        batches = list(
            torch.tensor(list(windows(model, "default", window, limit=n_windows))).split(batch)
        )
        tokens = n_windows * window

        def plain() -> float:
            def forwards() -> None:
                with torch.no_grad():
                    for b in batches:
                        model.hf(b.to(device), use_cache=False)

            return tokens / check.seconds(forwards)

        plain()  # warm-up
        before = plain()
        with tempfile.TemporaryDirectory() as tmp:
            store = harvest(model, "default", out=f"{tmp}/h", tokens=tokens, window=window,
                            batch_size=batch, progress=False)  # fmt: skip
            rate = store.run["harvested_tokens"] / store.run["timings"]["harvest"]
        after = plain()
        forward = (before + after) / 2
        plain_tokens_per_s.append(forward)
        print(
            f"  {tokens} tokens: plain {forward:,.0f} tokens/s ({before:,.0f}, {after:,.0f}), harvest {rate:,.0f}"
        )
        check.record(
            "harvest / plain forward throughput",
            f"{rate / forward:.2f}",
            "≥ 0.85",
            rate / forward >= 0.85,
        )

    def sae_training() -> None:
        from mechscope.harvest import windows
        from mechscope.sae.train import TrainConfig, train_sae

        site, window = (
            "blocks.15.resid_post" if n_layers > 15 else f"blocks.{n_layers - 1}.resid_post",
            64,
        )
        n_windows = max(1, size["sae_rows"] // window)
        rows = torch.tensor(list(windows(model, "default", window, limit=n_windows)))
        parts = [model.run(b.to(device), save=[site]).cache[site] for b in rows.split(64)]
        acts = torch.cat(parts).flatten(0, 1).float()  # [rows, d_model], on the device
        batch, steps = size["sae_batch"], size["sae_steps"]

        def stream(n: int):
            for i in range(n):
                start = (i * batch) % (len(acts) - batch + 1)
                yield acts[start : start + batch]

        def train(n: int) -> None:
            cfg = TrainConfig(
                width=size["sae_width"], k=32, tokens=batch * n, batch_size=batch, eval_every=10**9
            )
            train_sae(stream(n), cfg, d_in=acts.shape[1], device=device, progress=False)

        train(2)  # warm-up
        rate = batch * steps / check.seconds(lambda: train(steps))
        print(
            f"  {len(acts):,} rows of {site}; width {size['sae_width']}, k 32, batch {batch}, {steps} steps"
        )
        check.record("SAE training (TopK) tokens/s", f"{rate:,.0f}")
        if plain_tokens_per_s:
            check.record(
                "SAE training / plain forward tokens/s", f"{rate / plain_tokens_per_s[0]:.2f}"
            )

    def sweep() -> None:
        from mechscope.patching import activation_patching

        io, s = model.to_single_token(" Mary"), model.to_single_token(" John")
        clean, corrupt = model.to_tokens(CLEAN).to(device), model.to_tokens(CORRUPT).to(device)
        layers = list(range(size["sweep_layers"] or n_layers))
        n_pos = clean.shape[1]

        def metric(logits: torch.Tensor) -> torch.Tensor:
            return logits[:, -1, io] - logits[:, -1, s]

        def loop() -> torch.Tensor:
            cache = model.run(clean, save=[f"blocks.{i}.resid_pre" for i in layers]).cache
            out = torch.empty(len(layers), n_pos, device=device)
            for row, layer in enumerate(layers):
                for pos in range(n_pos):
                    patch = ms.patch(f"blocks.{layer}.resid_pre", cache, positions=[pos])
                    out[row, pos] = metric(model.run(corrupt, interventions=[patch]).logits)[0]
            return out

        def batched() -> torch.Tensor:
            return activation_patching(model, clean, corrupt, metric, "resid_pre", layers=layers,
                                       progress=False).raw  # fmt: skip

        results = {}
        for name, fn in (("batched", batched), ("loop", loop)):
            fn()  # warm-up
            check.sync()
            start = time.perf_counter()
            results[name] = fn()
            check.sync()
            results[name + "_s"] = time.perf_counter() - start
        err = (results["batched"].float() - results["loop"].float()).abs().max().item()
        t_loop, t_batched = results["loop_s"], results["batched_s"]
        print(
            f"  {len(layers) * n_pos} patches: one forward each {t_loop:.2f} s, batched {t_batched:.3f} s"
        )
        check.record("sweep max |difference| batched vs per-patch", f"{err:.2g}")
        check.record("sweep: per-patch time / batched time", f"{t_loop / t_batched:.1f}×", "≥ 10×",
                     t_loop / t_batched >= 10)  # fmt: skip

    parts = {
        "1": (f"1. exactness against HF in {str(dtype).removeprefix('torch.')}", exactness),
        "2": ("2. hook overhead", overhead),
        "3": ("3. harvest throughput", harvest_throughput),
        "4": ("4. SAE training", sae_training),
        "5": ("5. patching sweep", sweep),
    }
    for key in args.parts.split(","):
        check.part(*parts[key.strip()])
    check.table()
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
