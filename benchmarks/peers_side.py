"""nnsight and TransformerLens sides of `benchmarks/peers.py`: the same three workloads, each peer's usual way.

Run with a peer's own python (``.venv-nnsight/bin/python`` or
``.venv-tl/bin/python``), never the project's: it imports only the standard
library, torch, safetensors, transformers and the peer. The inputs (token ids
chosen by mechscope, the converted model folder) come in one safetensors
file; each peer loads SmolLM2 from that folder with ``HF_HUB_OFFLINE=1``.

Workloads (every forward without gradients except the attribution backward):

- ``forward``: one batch, saving ``resid_pre`` and ``resid_post`` of every
  layer (nnsight: each decoder layer's ``.input`` and ``.output``;
  TransformerLens: ``run_with_cache`` filtered to ``hook_resid_pre`` /
  ``hook_resid_post``);
- ``sweep``: the IOI ``resid_pre`` layer × position sweep, denoising the
  corrupted prompt with the clean one, metric logit(IO) − logit(S) at the
  last position (nnsight: a clean trace saving ``resid_pre``, then one trace
  with one invoke per patch, batched into one forward; TransformerLens: its
  ``patching.get_act_patch_resid_pre``, one forward per patch);
- ``attribution``: attribution patching over heads: a clean forward caching
  the per-head attention outputs before the output projection (nnsight: the
  ``o_proj`` input; TransformerLens: ``hook_z``), a corrupted forward and
  backward of the mean logit difference keeping those activations and their
  gradients, and (clean − corrupted) · gradient summed per head, over the
  metric's clean − corrupted difference.

Each workload runs once untimed, then ``--repeats`` timed times (the sweep
``--sweep-repeats`` times, after a warm-up on the first layer's patches
only). A load or a workload that fails is recorded with its
exception and the rest go on. Results: one JSON line on stdout, the numbers
(saved resids, sweep, head scores) in the ``--out`` safetensors file.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import traceback
from collections.abc import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

import torch  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def why(exc: BaseException) -> str:
    """The exception in one line, with the innermost frame it came from."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:400] + where


def logit_diff(last: torch.Tensor, io: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """logit(IO) − logit(S) per row of last-position logits [batch, vocab]."""
    rows = torch.arange(last.shape[0])
    return last[rows, io] - last[rows, s]


class NNsightPeer:
    """The workloads the way nnsight's documentation writes them."""

    def __init__(self, folder: str) -> None:
        import nnsight
        from nnsight import TransformersModel

        self.version = nnsight.__version__
        self.model = TransformersModel(
            folder, task="text-generation", dispatch=True, dtype=torch.float32
        )
        self.layers = self.model.model.layers
        self.n_layers = len(self.layers)
        self.n_heads = self.model._module.config.num_attention_heads

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        pre: list[torch.Tensor] = []
        post: list[torch.Tensor] = []
        with torch.no_grad(), self.model.trace(ids):
            for layer in self.layers:
                pre.append(layer.input.save())
                post.append(layer.output.save())
        return torch.stack(pre + post)

    def sweep(self, clean: torch.Tensor, corrupt: torch.Tensor, io: int, s: int, layers: int):
        n_pos = clean.shape[1]
        diffs: list[torch.Tensor] = []
        clean_pre: list[torch.Tensor] = []
        with torch.no_grad(), self.model.trace(clean):
            for layer in range(layers):
                clean_pre.append(self.layers[layer].input.save())
        with torch.no_grad(), self.model.trace() as tracer:
            for layer in range(layers):
                for pos in range(n_pos):
                    with tracer.invoke(corrupt):
                        self.layers[layer].input[:, pos] = clean_pre[layer][:, pos]
                        last = self.model.lm_head.output[0, -1]
                        diffs.append((last[io] - last[s]).save())
        return torch.stack(diffs).reshape(layers, n_pos)

    def attribution(self, clean, corrupt, io, s) -> torch.Tensor:
        z_clean: list[torch.Tensor] = []
        z_corrupt: list[torch.Tensor] = []
        grads: list[torch.Tensor] = []
        with torch.no_grad(), self.model.trace(clean):
            for layer in self.layers:
                z_clean.append(layer.self_attn.o_proj.input.save())
            clean_last = self.model.lm_head.output[:, -1].save()
        m_clean = logit_diff(clean_last, io, s).mean()
        with self.model.trace(corrupt):
            for layer in self.layers:
                z_corrupt.append(layer.self_attn.o_proj.input.save())
            value = logit_diff(self.model.lm_head.output[:, -1], io, s).mean()
            m_corrupt = value.save()
            with value.backward():
                for z in reversed(z_corrupt):
                    grads.append(z.grad.save())
        grads.reverse()
        return head_scores(z_clean, z_corrupt, grads, self.n_heads, m_clean - m_corrupt)


class TransformerLensPeer:
    """The workloads the way TransformerLens's documentation writes them (TransformerBridge)."""

    def __init__(self, folder: str) -> None:
        import transformer_lens
        from transformer_lens.model_bridge import TransformerBridge

        self.version = getattr(transformer_lens, "__version__", None) or _dist_version(
            "transformer-lens"
        )
        self.model = TransformerBridge.boot_transformers(folder, device="cpu", dtype=torch.float32)
        self.n_layers = self.model.cfg.n_layers
        self.n_heads = self.model.cfg.n_heads

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        def resid(name: str) -> bool:
            return name.endswith(("hook_resid_pre", "hook_resid_post"))

        with torch.no_grad():
            _, cache = self.model.run_with_cache(ids, names_filter=resid)
        names = [f"blocks.{i}.hook_resid_pre" for i in range(self.n_layers)]
        names += [f"blocks.{i}.hook_resid_post" for i in range(self.n_layers)]
        return torch.stack([cache[n] for n in names])

    def sweep(self, clean: torch.Tensor, corrupt: torch.Tensor, io: int, s: int, layers: int):
        from transformer_lens import patching

        def metric(logits: torch.Tensor) -> torch.Tensor:
            return (logits[:, -1, io] - logits[:, -1, s]).mean()

        with torch.no_grad():
            _, cache = self.model.run_with_cache(
                clean, names_filter=lambda n: n.endswith("hook_resid_pre")
            )
            if layers == self.n_layers:
                return patching.get_act_patch_resid_pre(self.model, corrupt, cache, metric)
            # the warm-up: the first `layers` layers' patches, through the same function
            import pandas as pd

            index = pd.DataFrame(
                [(ly, p) for ly in range(layers) for p in range(clean.shape[1])],
                columns=["layer", "pos"],
            )
            return patching.generic_activation_patch(
                self.model,
                corrupt,
                cache,
                metric,
                patching.layer_pos_patch_setter,
                "resid_pre",
                index_df=index,
            )

    def attribution(self, clean, corrupt, io, s) -> torch.Tensor:
        def is_z(name: str) -> bool:
            return name.endswith("attn.hook_z")

        with torch.no_grad():
            clean_logits, clean_cache = self.model.run_with_cache(clean, names_filter=is_z)
        m_clean = logit_diff(clean_logits[:, -1], io, s).mean()
        # keyed by layer: the hooks report hook_z by its canonical name, blocks.L.attn.o.hook_in
        acts: dict[int, torch.Tensor] = {}
        grads: dict[int, torch.Tensor] = {}

        def keep_act(act: torch.Tensor, hook) -> None:
            acts[int(hook.name.split(".")[1])] = act.detach()

        def keep_grad(grad: torch.Tensor, hook) -> None:
            grads[int(hook.name.split(".")[1])] = grad.detach()

        with self.model.hooks(fwd_hooks=[(is_z, keep_act)], bwd_hooks=[(is_z, keep_grad)]):
            value = logit_diff(self.model(corrupt)[:, -1], io, s).mean()
            value.backward()
        layers = range(self.n_layers)
        return head_scores(
            [clean_cache[f"blocks.{i}.attn.hook_z"] for i in layers],
            [acts[i] for i in layers],
            [grads[i] for i in layers],
            self.n_heads,
            m_clean - value.detach(),
        )


def head_scores(clean, corrupt, grads, n_heads: int, denom: torch.Tensor) -> torch.Tensor:
    """[layer, head]: Σ over prompts, positions and d_head of (clean − corrupted) · grad, / denom."""
    rows = []
    with torch.no_grad():
        for c, x, g in zip(clean, corrupt, grads, strict=True):
            prod = (c - x) * g
            rows.append(prod.reshape(*prod.shape[:2], n_heads, -1).sum((0, 1, 3)))
        return torch.stack(rows) / denom.detach()


def _dist_version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


PEERS = {"nnsight": NNsightPeer, "transformerlens": TransformerLensPeer}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer", choices=sorted(PEERS), required=True)
    parser.add_argument("--inputs", required=True, help="safetensors file written by peers.py")
    parser.add_argument("--out", required=True, help="safetensors file for the peer's numbers")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sweep-repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workloads", default="forward,sweep,attribution")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with safe_open(args.inputs, "pt") as f:
        meta = f.metadata()
        t = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    report: dict = {"peer": args.peer, "workloads": {}}
    numbers: dict[str, torch.Tensor] = {}
    try:
        start = time.perf_counter()
        peer = PEERS[args.peer](meta["folder"])
        report["load_s"] = time.perf_counter() - start
        report["version"] = peer.version
    except Exception as exc:  # a peer that cannot load the model: say why, nothing else runs
        report["load_error"] = why(exc)
        print(json.dumps(report))
        return
    io, s = int(t["io"]), int(t["s"])
    jobs = {
        "forward": (lambda: peer.forward(t["forward_ids"]), None, args.repeats),
        "sweep": (
            lambda: peer.sweep(t["clean"], t["corrupt"], io, s, peer.n_layers),
            # the peers' sweeps take minutes: warm up on the first layer's patches only
            lambda: peer.sweep(t["clean"], t["corrupt"], io, s, 1),
            args.sweep_repeats,
        ),
        "attribution": (
            lambda: peer.attribution(t["ioi_clean"], t["ioi_corrupt"], t["ioi_io"], t["ioi_s"]),
            None,
            args.repeats,
        ),
    }
    for name in args.workloads.split(","):
        fn, warm, repeats = jobs[name]
        entry: dict = {}
        try:
            result = (warm or fn)()
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                result = fn()
                times.append(time.perf_counter() - start)
            entry["times"] = times
            numbers[name] = torch.as_tensor(result).detach().float().contiguous()
        except Exception as exc:
            entry["error"] = why(exc)
        report["workloads"][name] = entry
    save_file(numbers, args.out)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
