"""Mergeable per-unit accumulators: top-k windows, a random sample, running statistics.

One `UnitAccumulator` holds, for every unit of one site, what a Neuroscope
page needs: the k windows with the highest activation (with the activation of
every token), a uniform random sample of windows chosen by a hash of
(window, unit) so that any split of the corpus picks the same ones, and
statistics (token count, sum, sum of squares, max, active count, a histogram
on fixed bins).

Everything merges exactly, so shards can run apart and a killed harvest can
resume: top-k and the sample break ties by window id; counts are integers;
sums are accumulated in fixed point, two int64 limbs (each batch's float sum is split
once onto a fixed grid, and integer addition does not depend on the grouping),
so two shards merged give bit-for-bit the state of one pass over the same
batches.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from jaxtyping import Float, Int
from torch import Tensor

from ..errors import InputError

# Sums are kept as two int64 limbs, value = hi·2^-HI + lo·2^-LO: each batch's float64
# sum is split once, deterministically, and integer addition does not care about
# grouping. Sums: range ±8.8e12, resolution 2^-52; sums of squares: ±1.8e16, 2^-40.
SUM_BITS = (20, 52)
SUMSQ_BITS = (8, 40)
_LIMIT = 2.0**62


def hist_edges(lo: float = 1e-2, hi: float = 1e3, per_decade: int = 8) -> Tensor:
    """Fixed, data-independent histogram edges: symmetric and logarithmic, with 0 an edge.

    Bins are (-inf, -hi], …, (-lo, 0], (0, lo], …, (hi, inf): every scale of
    activation gets bins, and the positive count is exactly the active count.

    Example: ``hist_edges()`` → 83 edges, ±1e-2 … ±1e3 at 8 per decade, and 0.
    """
    import math

    n = int(round(math.log10(hi / lo) * per_decade))
    pos = torch.logspace(math.log10(lo), math.log10(hi), n + 1, dtype=torch.float64)
    return torch.cat([-pos.flip(0), torch.zeros(1, dtype=torch.float64), pos]).float()


def window_hash(windows: Int[Tensor, " w"], units: Int[Tensor, " u"], salt: int) -> Tensor:
    """A deterministic pseudo-random int64 key per (window, unit) in [0, 2^62): the sample's order.

    Example: ``window_hash(torch.arange(4), torch.arange(3), salt=0)`` → [4, 3] int64.
    """
    x = windows.long()[:, None] * 0x9E3779B1 + units.long()[None, :] * 0x85EBCA77 + salt
    for shift, mult in ((16, 0x7FEB352D), (15, 0x846CA68B), (16, 0x2545F491)):
        x = (x ^ (x >> shift)) * mult
        x = x & 0x3FFFFFFFFFFFFFFF
    return x


def _fixed(x: Tensor, bits: tuple[int, int], what: str) -> Tensor:
    """[n] float → [2 n] int64 limbs (hi, lo) with x ≈ hi·2^-bits[0] + lo·2^-bits[1]."""
    y = x.double()
    hi = torch.round(y * 2.0 ** bits[0])
    if hi.abs().max().item() >= _LIMIT:
        raise InputError(f"{what} overflows the fixed-point accumulator (activations too large)")
    lo = torch.round((y - hi * 2.0 ** -bits[0]) * 2.0 ** bits[1])
    return torch.stack([hi.long(), lo.long()])


def _value(limbs: Tensor, bits: tuple[int, int]) -> Tensor:
    return limbs[0].double() * 2.0 ** -bits[0] + limbs[1].double() * 2.0 ** -bits[1]


@dataclass
class UnitAccumulator:
    """Top-k, random sample and statistics for the `n_units` units of one site.

    Shapes: top_vals [unit k] (window max, -inf while empty), top_windows
    [unit k] (-1 while empty), top_acts [unit k pos]; the same for the sample
    with `sample_keys` [unit s] (int64 hash, max while empty).

    Example::

        acc = UnitAccumulator.empty(8, k=5, window=16)
        acc.update(torch.randn(2, 16, 8), torch.tensor([0, 1]))   # two windows, ids 0 and 1
        acc.top_windows[0]    # e.g. tensor([1, 0, -1, -1, -1])
    """

    n_units: int
    k: int
    n_random: int
    window: int
    top_vals: Float[Tensor, "unit k"]
    top_windows: Int[Tensor, "unit k"]
    top_acts: Float[Tensor, "unit k pos"]
    sample_keys: Int[Tensor, "unit s"]
    sample_windows: Int[Tensor, "unit s"]
    sample_acts: Float[Tensor, "unit s pos"]
    count: Int[Tensor, ""]
    sum_fixed: Int[Tensor, "2 unit"]
    sumsq_fixed: Int[Tensor, "2 unit"]
    max: Float[Tensor, " unit"]
    active: Int[Tensor, " unit"]
    hist: Int[Tensor, "unit bin"]
    edges: Float[Tensor, " edge"]
    salt: int = 0
    hist_every: int = 8

    @classmethod
    def empty(
        cls,
        n_units: int,
        k: int = 20,
        n_random: int = 10,
        window: int = 64,
        *,
        salt: int = 0,
        hist_every: int = 8,
        edges: Tensor | None = None,
        device: torch.device | str = "cpu",
    ) -> UnitAccumulator:
        """A fresh accumulator (`hist_every`: the histogram counts windows whose id % it == 0).

        It lives on `device` (the harvested model's): batches reduce there, and
        only a checkpoint (`state_dict`) brings its state to the host.
        """
        e = hist_edges() if edges is None else edges
        big = torch.iinfo(torch.int64).max
        acc = cls(
            n_units,
            k,
            n_random,
            window,
            top_vals=torch.full((n_units, k), float("-inf")),
            top_windows=torch.full((n_units, k), -1, dtype=torch.long),
            top_acts=torch.zeros(n_units, k, window),
            sample_keys=torch.full((n_units, n_random), big, dtype=torch.long),
            sample_windows=torch.full((n_units, n_random), -1, dtype=torch.long),
            sample_acts=torch.zeros(n_units, n_random, window),
            count=torch.zeros((), dtype=torch.long),
            sum_fixed=torch.zeros(2, n_units, dtype=torch.long),
            sumsq_fixed=torch.zeros(2, n_units, dtype=torch.long),
            max=torch.full((n_units,), float("-inf")),
            active=torch.zeros(n_units, dtype=torch.long),
            hist=torch.zeros(n_units, len(e) + 1, dtype=torch.long),
            edges=e,
            salt=salt,
            hist_every=hist_every,
        )
        return acc.to(device)

    @property
    def device(self) -> torch.device:
        return self.top_vals.device

    def to(self, device: torch.device | str) -> UnitAccumulator:
        """This accumulator with its state on `device` (itself, moved in place)."""
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Tensor):
                setattr(self, f.name, value.to(device))
        return self

    # --- one batch ------------------------------------------------------------------

    @torch.no_grad()
    def update(self, acts: Float[Tensor, "batch pos unit"], windows: Int[Tensor, " batch"]) -> None:
        """Add one batch of windows (`windows` are their global ids, distinct)."""
        b, t, u = acts.shape
        if u != self.n_units or t != self.window:
            raise InputError(
                f"batch of shape {tuple(acts.shape)} does not fit an accumulator of "
                f"{self.n_units} units and window {self.window}"
            )
        dev = self.device
        acts = acts.detach().float().to(dev)
        windows = windows.to(dev)
        flat = acts.reshape(b * t, u)
        ones = torch.ones(1, b * t, dtype=flat.dtype, device=flat.device)
        # sums as one matrix-vector product each: far faster than reductions over dim 0
        self.sum_fixed += _fixed((ones @ flat)[0], SUM_BITS, "sum")
        self.sumsq_fixed += _fixed((ones @ flat.square())[0], SUMSQ_BITS, "sum of squares")
        self.active += (ones @ (flat > 0).to(flat.dtype))[0].round().long()
        self.count += b * t
        wmax = acts.amax(dim=1)  # [batch unit]
        self.max = torch.maximum(self.max, wmax.amax(0))
        sel = (windows % self.hist_every == 0).nonzero().flatten()
        if len(sel):
            bins = torch.bucketize(acts[sel].contiguous(), self.edges, out_int32=True)
            offset = torch.arange(u, device=dev, dtype=torch.int32) * (len(self.edges) + 1)
            counts = torch.bincount((bins + offset).flatten(), minlength=u * (len(self.edges) + 1))
            self.hist += counts.view(u, -1)
        self._merge_top(wmax.T, windows, acts)
        keys = window_hash(windows, torch.arange(u, device=dev), self.salt).T  # [unit batch]
        self._merge_sample(keys, windows, acts)

    def _merge_top(self, cand: Tensor, windows: Tensor, acts: Tensor) -> None:
        # only units where some new window beats the current k-th best (or ties it)
        hit = (cand >= self.top_vals[:, -1:]).any(1).nonzero().flatten()
        if not len(hit):
            return
        vals = torch.cat([self.top_vals[hit], cand[hit]], 1)
        wins = torch.cat([self.top_windows[hit], windows.expand(len(hit), -1)], 1)
        order = _order(-vals, wins)[:, : self.k]
        self._take(hit, order, vals, wins, acts, self.top_vals, self.top_windows, self.top_acts)

    def _merge_sample(self, keys: Tensor, windows: Tensor, acts: Tensor) -> None:
        hit = (keys < self.sample_keys[:, -1:]).any(1).nonzero().flatten()
        if not len(hit) or self.n_random == 0:
            return
        vals = torch.cat([self.sample_keys[hit], keys[hit]], 1)
        wins = torch.cat([self.sample_windows[hit], windows.expand(len(hit), -1)], 1)
        order = _order(vals, wins)[:, : self.n_random]
        self._take(
            hit, order, vals, wins, acts, self.sample_keys, self.sample_windows, self.sample_acts
        )

    def _take(
        self,
        hit: Tensor,
        order: Tensor,
        vals: Tensor,
        wins: Tensor,
        acts: Tensor,
        keep_vals: Tensor,
        keep_wins: Tensor,
        keep_acts: Tensor,
    ) -> None:
        """Write the chosen candidates (old slots < n, new batch rows ≥ n) back into the state."""
        n = keep_vals.shape[1]
        keep_vals[hit] = torch.gather(vals, 1, order)
        keep_wins[hit] = torch.gather(wins, 1, order)
        old = keep_acts[hit]  # [hit n pos]
        from_old = order < n
        new_acts = torch.gather(
            old, 1, order.clamp(max=n - 1)[..., None].expand(-1, -1, old.shape[2])
        )
        if (~from_old).any():
            slot_u, slot_j = (~from_old).nonzero(as_tuple=True)
            rows = order[slot_u, slot_j] - n
            new_acts[slot_u, slot_j] = acts[rows, :, hit[slot_u]].float()
        keep_acts[hit] = new_acts

    # --- merging and saving -------------------------------------------------------------

    def merge(self, other: UnitAccumulator) -> None:
        """Fold `other` (same units, k, sample size and bins; disjoint windows) into this one."""
        if (other.n_units, other.k, other.n_random, other.window, other.salt) != (
            self.n_units,
            self.k,
            self.n_random,
            self.window,
            self.salt,
        ) or not torch.equal(other.edges.to(self.device), self.edges):
            raise InputError("cannot merge harvests of different units, k, sample size or bins")
        other = UnitAccumulator.from_state(other.state_dict(), device=self.device)
        self.count += other.count
        self.sum_fixed += other.sum_fixed
        self.sumsq_fixed += other.sumsq_fixed
        self.active += other.active
        self.hist += other.hist
        self.max = torch.maximum(self.max, other.max)
        everything = torch.arange(self.n_units, device=self.device)
        for kind in ("top", "sample"):
            mine = self._slots(kind)
            theirs = other._slots(kind)
            vals = torch.cat([mine[0], theirs[0]], 1)
            wins = torch.cat([mine[1], theirs[1]], 1)
            acts = torch.cat([mine[2], theirs[2]], 1)
            key = -vals if kind == "top" else vals
            n = mine[0].shape[1]
            order = _order(key, wins)[:, :n]
            mine[0][:] = torch.gather(vals, 1, order)
            mine[1][:] = torch.gather(wins, 1, order)
            mine[2][:] = acts[everything[:, None], order]

    def _slots(self, kind: str) -> tuple[Tensor, Tensor, Tensor]:
        if kind == "top":
            return self.top_vals, self.top_windows, self.top_acts
        return self.sample_keys, self.sample_windows, self.sample_acts

    def state_dict(self) -> dict[str, Tensor]:
        """Tensors to save (safetensors; they stay on the accumulator's device); `from_state` rebuilds it."""
        meta = torch.tensor(
            [self.n_units, self.k, self.n_random, self.window, self.salt, self.hist_every]
        )
        return {
            "meta": meta,
            "top_vals": self.top_vals,
            "top_windows": self.top_windows,
            "top_acts": self.top_acts,
            "sample_keys": self.sample_keys,
            "sample_windows": self.sample_windows,
            "sample_acts": self.sample_acts,
            "count": self.count,
            "sum_fixed": self.sum_fixed,
            "sumsq_fixed": self.sumsq_fixed,
            "max": self.max,
            "active": self.active,
            "hist": self.hist,
            "edges": self.edges,
        }

    @classmethod
    def from_state(
        cls, state: dict[str, Tensor], device: torch.device | str | None = None
    ) -> UnitAccumulator:
        """The accumulator of a `state_dict` (a copy), on `device` (default: where the state is)."""
        n_units, k, n_random, window, salt, hist_every = (int(v) for v in state["meta"])
        tensors = {name: state[name].clone() for name in state if name != "meta"}
        acc = cls(n_units, k, n_random, window, **tensors, salt=salt, hist_every=hist_every)
        return acc if device is None else acc.to(device)

    def equal(self, other: UnitAccumulator) -> bool:
        """Bit-for-bit equality of the whole state."""
        a, b = self.state_dict(), other.state_dict()
        return a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)

    # --- results --------------------------------------------------------------------

    @property
    def mean(self) -> Tensor:
        return _value(self.sum_fixed, SUM_BITS) / max(int(self.count), 1)

    @property
    def std(self) -> Tensor:
        n = max(int(self.count), 1)
        var = _value(self.sumsq_fixed, SUMSQ_BITS) / n - self.mean.square()
        return var.clamp(min=0).sqrt()

    @property
    def frac_active(self) -> Tensor:
        return self.active.double() / max(int(self.count), 1)


def _order(key: Tensor, windows: Tensor) -> Tensor:
    """Per row, argsort by `key` ascending with ties broken by window id (empty slots last)."""
    by_window = torch.argsort(
        torch.where(windows < 0, windows.max() + 1, windows), dim=1, stable=True
    )
    key_sorted = torch.gather(key, 1, by_window)
    by_key = torch.argsort(key_sorted, dim=1, stable=True)
    return torch.gather(by_window, 1, by_key)
