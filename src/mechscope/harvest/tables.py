"""A harvest's results as Parquet tables, and `HarvestStore` to query them (DuckDB).

Tables in a harvest run folder:

- ``units.parquet``: one row per unit: site, unit, count, mean, std, max,
  frac_active, hist (counts on the bins of ``hist.json``).
- ``examples.parquet``: site, unit, kind (``top`` | ``random``), rank,
  window, max_act, max_pos (exact), acts (the activation of every token of the
  window, stored in half precision unless some value is too large for it).
- ``windows.parquet``: window, token_ids, tokens (decoded, one string per token)
  for every window that an example shows.
- ``token_hits.parquet``: token_id, token, site, unit, act, window, pos: the
  tokens on which a unit's top examples peak (act ≥ half the unit's max), so
  "which neurons fire on ' Paris'" is one query.

`HarvestStore.unit` reads one unit's `UnitRecord` (in ``results.py``, a
`Result` that also saves on its own).

Example::

    store = open_harvest("runs/harvest")
    store.search_token(" Paris")[:3]
    store.query("SELECT site, avg(frac_active) FROM units GROUP BY site").fetchall()
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from ..errors import InputError, closest
from .results import Example, UnitRecord, UnitStats

TOKENS_FILE = "windows.bin"  # int32 token ids, window after window

if TYPE_CHECKING:
    from ..core.model import Model
    from ..figures import Figures
    from .stats import UnitAccumulator

TABLES = ("units", "examples", "windows", "token_hits")
HALF_MAX = 60000.0  # below float16's largest finite value, 65504
PEAK_FRACTION = 0.5  # a token is a unit's "hit" if it reaches this share of the unit's max


@dataclass(frozen=True)
class TokenHit:
    """A unit whose top examples peak on a token: how often and how strongly.

    Example: ``hit = open_harvest("runs/harvest").search_token(" Paris")[0]``; ``hit.unit``.
    """

    site: str
    unit: int
    token: str
    count: int
    max_act: float


# --- writing ---------------------------------------------------------------------------


def _list_column(values: np.ndarray, pa_type: pa.DataType) -> pa.Array:
    """[rows, n] numpy → a Parquet list column without a Python loop."""
    rows, n = values.shape
    offsets = pa.array(np.arange(0, rows * n + 1, n, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(values.reshape(-1), type=pa_type))


def _decoder(tokenizer: Any) -> Any:
    cache: dict[int, str] = {}

    def decode(ids: np.ndarray) -> list[str]:
        out = []
        for i in ids.tolist():
            s = cache.get(i)
            if s is None:
                s = cache[i] = tokenizer.decode([i]) if tokenizer is not None else f"<{i}>"
            out.append(s)
        return out

    return decode


def _on_host(acc: UnitAccumulator) -> UnitAccumulator:
    from .stats import UnitAccumulator

    return UnitAccumulator.from_state(acc.state_dict(), "cpu")


def write_tables(
    folder: Path, model: Model, accs: dict[str, UnitAccumulator], config: dict[str, Any]
) -> dict[str, Any]:
    """Write the four tables from finished accumulators; returns a summary for run.json.

    Example: ``write_tables(run.dir, model, accs, config)["units"]`` → the units written
    (`config` is the harvest's config.json, with ``window`` and ``windows``).
    """
    # the tables are written on the host: a device accumulator comes over once, here
    accs = {name: a if a.device.type == "cpu" else _on_host(a) for name, a in accs.items()}
    window = int(config["window"])
    first = int(config["windows"][0])
    ids = np.fromfile(folder / TOKENS_FILE, dtype=np.int32).reshape(-1, window)
    decode = _decoder(model.tokenizer)

    # activations of examples are for display: half precision (3 significant digits) halves
    # the largest table; float32 if any value would not fit
    biggest = max(
        float(torch.cat([a.top_acts.flatten(), a.sample_acts.flatten()]).abs().max())
        for a in accs.values()
    )
    act_type = pa.float16() if biggest < HALF_MAX else pa.float32()
    unit_batches, example_batches, hit_batches = [], [], []
    shown: set[int] = set()
    edges = next(iter(accs.values())).edges if accs else None
    for site, acc in accs.items():
        n = acc.n_units
        unit_batches.append(
            pa.table(
                {
                    "site": pa.array([site] * n),
                    "unit": pa.array(np.arange(n, dtype=np.int32)),
                    "count": pa.array(np.full(n, int(acc.count), dtype=np.int64)),
                    "mean": pa.array(acc.mean.numpy()),
                    "std": pa.array(acc.std.numpy()),
                    "max": pa.array(acc.max.double().numpy()),
                    "frac_active": pa.array(acc.frac_active.numpy()),
                    "hist": _list_column(acc.hist.numpy(), pa.int64()),
                }
            )
        )
        top_w = acc.top_windows.numpy()
        kinds = [("top", top_w, acc.top_acts.numpy(), acc.top_vals.numpy())]
        sample_w = acc.sample_windows.numpy().copy()
        # the random sample is uniform over all windows; drop the ones already shown as top
        in_top = (sample_w[:, :, None] == top_w[:, None, :]).any(-1)
        sample_w[in_top] = -1
        kinds.append(("random", sample_w, acc.sample_acts.numpy(), None))
        for kind, wins, acts, vals in kinds:
            unit, slot = np.nonzero(wins >= 0)
            # ranks stay consecutive after dropping sampled windows that are also top
            rank = np.cumsum(wins >= 0, axis=1)[unit, slot] - 1
            a = acts[unit, slot]  # [rows window]
            shown.update(np.unique(wins[unit, slot]).tolist())
            example_batches.append(
                pa.table(
                    {
                        # explicit types: an empty batch must not become a null column
                        "site": pa.array([site] * len(unit), type=pa.string()),
                        "unit": pa.array(unit.astype(np.int32)),
                        "kind": pa.array([kind] * len(unit), type=pa.string()),
                        "rank": pa.array(rank.astype(np.int16)),
                        "window": pa.array(wins[unit, slot].astype(np.int64)),
                        "max_act": pa.array(
                            (vals[unit, slot] if vals is not None else a.max(1)).astype(np.float32)
                        ),
                        "max_pos": pa.array(a.argmax(1).astype(np.int16)),
                        "acts": _list_column(a.astype(act_type.to_pandas_dtype()), act_type),
                    }
                )
            )
        # tokens where a unit's top examples peak
        best = acc.top_vals[:, :1].numpy()[..., None]  # [unit 1 1]
        top_acts = acc.top_acts.numpy()
        mask = (top_acts >= PEAK_FRACTION * best) & (top_acts > 0) & (top_w[..., None] >= 0)
        unit, slot, pos = np.nonzero(mask)
        wins = top_w[unit, slot]
        tok = ids[wins - first, pos]
        hit_batches.append(
            pa.table(
                {
                    "token_id": pa.array(tok.astype(np.int32)),
                    "token": pa.array(decode(tok), type=pa.string()),
                    "site": pa.array([site] * len(unit), type=pa.string()),
                    "unit": pa.array(unit.astype(np.int32)),
                    "act": pa.array(top_acts[unit, slot, pos].astype(np.float32)),
                    "window": pa.array(wins.astype(np.int64)),
                    "pos": pa.array(pos.astype(np.int16)),
                }
            )
        )
    order = np.array(sorted(shown), dtype=np.int64)
    win_ids = ids[order - first] if len(order) else np.zeros((0, window), np.int32)
    windows = pa.table(
        {
            "window": pa.array(order),
            "token_ids": _list_column(win_ids, pa.int32()),
            "tokens": pa.array([decode(row) for row in win_ids], type=pa.list_(pa.string())),
        }
    )
    opts = {"compression": "zstd", "row_group_size": 8192}
    pq.write_table(pa.concat_tables(unit_batches), folder / "units.parquet", **opts)
    pq.write_table(pa.concat_tables(example_batches), folder / "examples.parquet", **opts)
    pq.write_table(windows, folder / "windows.parquet", **opts)
    pq.write_table(pa.concat_tables(hit_batches), folder / "token_hits.parquet", **opts)
    every = next(iter(accs.values())).hist_every if accs else 1
    (folder / "hist.json").write_text(
        json.dumps({"edges": edges.tolist() if edges is not None else [], "every": every})
    )
    return {
        "harvested_tokens": int(len(ids) * window),
        "units": int(sum(a.n_units for a in accs.values())),
        "windows_shown": len(order),
        "corpus_sha256": _sha256(folder / TOKENS_FILE),
    }


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --- reading ---------------------------------------------------------------------------

_UNIT_QUERY = re.compile(
    r"^\s*(?:l(?:ayer)?\s*)?(\d+)\s*(?:[/:.,\s]\s*|\s*n(?:euron)?\s*|\s*h(?:ead)?\s*)(\d+)\s*$",
    re.IGNORECASE,
)


class HarvestStore:
    """A finished harvest, queried with DuckDB (views ``units``, ``examples``, ``windows``, ``token_hits``).

    Example::

        store = HarvestStore("runs/harvest")
        store.top_units("blocks.12.mlp.post", by="max", limit=5)   # [UnitStats, …]
    """

    def __init__(self, path: str | Path) -> None:
        import duckdb

        self.path = Path(path)
        if not (self.path / "units.parquet").exists():
            raise InputError(f"{self.path} is not a finished harvest (no units.parquet)")
        self.config: dict[str, Any] = _record(self.path / "config.json")
        self.run: dict[str, Any] = _record(self.path / "run.json")
        hist = _record(self.path / "hist.json")
        try:
            self.hist_edges: list[float] = [float(e) for e in hist["edges"]]
            self.hist_every: int = int(hist["every"])
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(
                f"{self.path / 'hist.json'} is not a harvest histogram ({e!r})"
            ) from None
        try:
            self.sites: list[str] = [str(s) for s in self.config["sites"]]
            self._units: dict[str, int] = {s: int(n) for s, n in self.config["units"].items()}
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise InputError(
                f"{self.path / 'config.json'} is not a harvest's config: no sites and units ({e!r})"
            ) from None
        for name, columns in COLUMNS.items():
            _check_table(self.path / f"{name}.parquet", columns)
        self._con = duckdb.connect()
        for name in TABLES:
            file = str(self.path / f"{name}.parquet").replace("'", "''")
            self._con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{file}')")

    def __repr__(self) -> str:
        units = sum(self._units.values())
        model = (self.config.get("model") or {}).get("name", "?")
        corpus = (self.config.get("corpus") or {}).get("spec", "?")
        return (
            f"HarvestStore({self.path.name}: {model}, {len(self.sites)} sites, "
            f"{units} units, {self.config.get('tokens', '?')} tokens of {corpus!r})"
        )

    def query(self, sql: str, params: list[Any] | None = None) -> Any:
        """Run SQL on the tables; returns a DuckDB relation/cursor (``.fetchall()``, ``.df()``)."""
        import duckdb

        try:
            return self._con.cursor().execute(sql, params or [])
        except duckdb.Error as e:  # a damaged table, or SQL that does not fit them
            message = " ".join(str(e).split())
            raise InputError(f"query on the harvest {self.path} failed: {message[:300]}") from None

    def n_units(self, site: str) -> int:
        """How many units `site` has."""
        self._check_site(site)
        return self._units[site]

    def _check_site(self, site: str) -> None:
        if site not in self._units:
            raise InputError(
                f"{site!r} was not harvested in {self.path.name}; harvested: "
                f"{', '.join(closest(site, self.sites, 5) or self.sites[:5])}"
            )

    def _check(self, site: str, unit: int) -> None:
        self._check_site(site)
        if not 0 <= unit < self._units[site]:
            raise InputError(f"{site} has units 0…{self._units[site] - 1}, not {unit}")

    def _unit_row(self, site: str, unit: int, extra: str = "") -> tuple[UnitStats, tuple]:
        """The unit's statistics and any `extra` columns of its row in ``units``, in one query."""
        self._check(site, unit)
        row = self.query(
            f"SELECT count, mean, std, max, frac_active{extra} FROM units "
            "WHERE site = ? AND unit = ?",
            [site, unit],
        ).fetchone()
        if row is None:
            raise InputError(f"{self.path / 'units.parquet'} has no row for {site} unit {unit}")
        return UnitStats(site, unit, int(row[0]), *map(float, row[1:5])), tuple(row[5:])

    def stats(self, site: str, unit: int) -> UnitStats:
        """The statistics of one unit."""
        return self._unit_row(site, unit)[0]

    def unit(self, site: str, unit: int) -> UnitRecord:
        """Statistics, histogram and examples (top first, then random) of one unit."""
        stats, (hist,) = self._unit_row(site, unit, ", hist")
        edges, counts = _trim_hist(self.hist_edges, list(hist))
        rows = self.query(
            'SELECT kind, "rank", "window", acts, max_act, max_pos FROM examples '
            'WHERE site = ? AND unit = ? ORDER BY kind, "rank"',
            [site, unit],
        ).fetchall()
        tokens = self.window_tokens([r[2] for r in rows])
        examples = [
            Example(r[0], int(r[1]), int(r[2]), tokens[r[2]], list(r[3]), float(r[4]), int(r[5]))
            for r in rows
        ]
        return UnitRecord(
            stats,
            edges,
            counts,
            [e for e in examples if e.kind == "top"],
            [e for e in examples if e.kind == "random"],
        )

    def figure(
        self, site: str, unit: int, path: str | Path, *, examples: int = 10, width: int = 24
    ) -> Figures:
        """Write the unit's card (histogram, top examples around their peak) as PNG, SVG and HTML."""
        from ..figures import named, unit_card

        record = self.unit(site, unit)
        top = record.top[:examples]
        width = min(width, len(top[0].tokens)) if top else width
        tokens, acts = [], []
        for e in top:
            lo = min(max(e.max_pos - 2 * width // 3, 0), len(e.tokens) - width)
            tokens.append(e.tokens[lo : lo + width])
            acts.append(e.acts[lo : lo + width])
        card = unit_card(
            tokens,
            np.array(acts, dtype=np.float32).reshape(len(top), width),
            record.hist_edges,
            record.hist_counts,
            path,
            title=f"{site} unit {unit}: max {record.stats.max:.3g}, "
            f"active {record.stats.frac_active:.1%}",
            row_labels=[f"#{e.rank + 1} ({e.max_act:.3g})" for e in top],
        )
        return named(path, card)

    def window_tokens(self, windows: list[int]) -> dict[int, list[str]]:
        """Decoded tokens of the given windows."""
        if not windows:
            return {}
        rows = self.query(
            'SELECT "window", tokens FROM windows WHERE "window" IN (SELECT unnest(?))',
            [sorted(set(windows))],
        ).fetchall()
        return {int(w): list(t) for w, t in rows}

    def search_token(self, text: str, limit: int = 50) -> list[TokenHit]:
        """Units whose top examples peak on the token `text` (exact first, then ignoring case and spaces)."""
        sql = (
            "SELECT site, unit, any_value(token), count(*) AS n, max(act) AS m FROM token_hits "
            "WHERE {cond} GROUP BY site, unit ORDER BY n DESC, m DESC LIMIT ?"
        )
        rows = self.query(sql.format(cond="token = ?"), [text, limit]).fetchall()
        if not rows:
            cond = "lower(trim(token)) = lower(trim(?))"
            rows = self.query(sql.format(cond=cond), [text, limit]).fetchall()
        return [TokenHit(r[0], int(r[1]), r[2], int(r[3]), float(r[4])) for r in rows]

    def find_units(self, query: str) -> list[tuple[str, int]]:
        """Units named by `query`: ``blocks.3.mlp.post:12``, ``L3 N12``, ``3/12`` or a unit number."""
        q = query.strip()
        site, _, num = q.rpartition(":") if ":" in q and not q[0].isdigit() else ("", "", "")
        if site:
            if site in self._units and num.strip().isdigit():
                unit = int(num)
                return [(site, unit)] if unit < self._units[site] else []
            return []
        m = _UNIT_QUERY.match(q)
        if m:
            layer, unit = int(m.group(1)), int(m.group(2))
            return [
                (s, unit)
                for s in self.sites
                if s.startswith(f"blocks.{layer}.") and unit < self._units[s]
            ]
        if q.isdigit():
            return [(self.sites[0], int(q))] if int(q) < self._units[self.sites[0]] else []
        return []

    def top_units(self, site: str, by: str = "max", limit: int = 100) -> list[UnitStats]:
        """The units of `site` with the largest `by` (max, mean, std or frac_active)."""
        self._check_site(site)
        if by not in ("max", "mean", "std", "frac_active"):
            raise InputError(f"top_units sorts by max, mean, std or frac_active, not {by!r}")
        rows = self.query(
            f"SELECT unit, count, mean, std, max, frac_active FROM units WHERE site = ? "
            f"ORDER BY {by} DESC LIMIT ?",
            [site, limit],
        ).fetchall()
        return [UnitStats(site, int(r[0]), int(r[1]), *map(float, r[2:])) for r in rows]


COLUMNS = {
    "units": ("site", "unit", "count", "mean", "std", "max", "frac_active", "hist"),
    "examples": ("site", "unit", "kind", "rank", "window", "acts", "max_act", "max_pos"),
    "windows": ("window", "token_ids", "tokens"),
    "token_hits": ("token_id", "token", "site", "unit", "act", "window", "pos"),
}


def _record(path: Path) -> dict[str, Any]:
    """A harvest's JSON record, or one line naming the file that is missing or not one."""
    from ..store import read_json_object

    record = read_json_object(path)
    if record is None:
        raise InputError(f"{path} is missing: {path.parent} is not a whole harvest")
    return record


def _check_table(path: Path, columns: tuple[str, ...]) -> None:
    """Fail in one line unless `path` is a Parquet file with (at least) `columns`."""
    if not path.is_file():
        raise InputError(f"{path} is {'a folder' if path.is_dir() else 'missing'}, not a table")
    try:
        with open(path, "rb") as f:
            if f.read(4) != b"PAR1":  # pyarrow reads the footer only: check the head too
                raise ValueError("it does not start with Parquet's magic bytes")
        names = pq.read_schema(path).names
    except (OSError, pa.ArrowException, ValueError) as e:
        message = " ".join(str(e).split())
        raise InputError(f"{path} is not a readable Parquet table ({message[:200]})") from None
    lacking = [c for c in columns if c not in names]
    if lacking:
        raise InputError(f"{path} is not a harvest table: it lacks columns {lacking}")


def _trim_hist(edges: list[float], counts: list[int]) -> tuple[list[float], list[int]]:
    """Histogram over its non-empty range; the open outer bins get a finite bound (×10)."""
    full = [edges[0] * 10, *edges, edges[-1] * 10]
    nz = [i for i, c in enumerate(counts) if c]
    if not nz:
        return [], []
    lo, hi = nz[0], nz[-1] + 1
    return full[lo : hi + 1], counts[lo:hi]


def open_harvest(path: str | Path) -> HarvestStore:
    """Open a finished harvest run folder.

    Example: ``open_harvest("runs/harvest").n_units("blocks.12.mlp.post")`` → 1536.
    """
    return HarvestStore(path)
