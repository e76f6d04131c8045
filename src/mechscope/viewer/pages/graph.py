"""Pages for attribution-graph runs (``mechscope.graphs.graph_run``): the graph, its nodes, its check.

A graph run's home draws the pruned graph as inline SVG, placed on the server
(``graph_drawing.py``): across, the token positions (the prompt's tokens along the bottom); up,
the layers, token embeddings at the bottom and logits at the top. Latents are blue
circles sized by influence, error nodes grey squares, embeddings green, logits red
(sized by probability); edges are blue when positive and red when negative, wider
for larger |weight|. What a hover shows of each node is JSON in the figure's
``data-graph`` attribute (escaped as an attribute, never markup; no inline script),
read by ``static/viewer.js``: the node's description and label, activation and
influence and, for a latent, its top examples in the harvest the run's config
names. Clicking a latent opens its feature page in that harvest when the viewer
serves it too; shift-, ctrl- or cmd-click (or the table's boxes) selects nodes
for a supernode. Below the graph: the scores, the target logits, the top latents
by influence, the intervention check (``check.safetensors``), the saved
supernodes and the downloads. The HTML is in ``templates/graph/``.

``GET /run/<run>/supernodes`` is the saved supernodes (JSON, ``[name, node id, …]``
groups); ``POST`` a JSON list of them replaces them (`save_supernodes`; checked
first: a 400 with a message for a bad one). ``/run/<run>/neuronpedia.json``
exports the graph with them in its qParams. The run is read only through
`open_graph_run`, once per change of its files.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InputError, MechscopeError
from ...graphs.results import (
    EMBEDDING,
    ERROR,
    FEATURE,
    GRAPH_FILE,
    KIND_NAMES,
    LOGIT,
    AttributionGraph,
    check_supernodes,
)
from ...graphs.runs import (
    NEURONPEDIA_FILE,
    SUPERNODES_FILE,
    latent_site,
    open_graph_run,
    save_supernodes,
)
from ...graphs.validate import CHECK_FILE, GraphCheck
from ..html import Markup, link, render, template, url
from ..registry import Document, NotFound, Request, Response, home, page
from ..runs import RunInfo
from ..tokens import show_token, unit_url
from . import harvest as harvest_pages
from .common import download, missing_file, num, share
from .graph_drawing import layout

KINDS = ("graph",)
TOP_NODES = 50  # latents in the table unless ?top=all
EXAMPLE_LATENTS = 300  # latents (by influence) whose harvest examples the hover shows
EXAMPLES_PER_LATENT = 3
CONTEXT = (12, 4)  # tokens shown before and after an example's peak
MAX_SUPERNODE_BYTES = 256 * 1024

ACT_NAMES = {
    FEATURE: "activation",
    ERROR: "write norm",
    EMBEDDING: "write norm",
    LOGIT: "probability",
}


# ---------------------------------------------------------------------------- reading


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def _cached(req: Request, key: Any, stamp: Any, load: Any) -> Any:
    """`load()`, kept per viewer under `key` until `stamp` changes (one version kept, not all)."""
    with req.app.lock(key):
        holder: dict[str, Any] = req.app.resource(key, dict)
        if "value" not in holder or holder.get("stamp") != stamp:
            holder.clear()
            holder.update(stamp=stamp, value=load())
        return holder["value"]


def graph_of(req: Request) -> tuple[AttributionGraph, GraphCheck | None]:
    """The run's graph (with its saved supernodes) and check, read again when a file changes."""
    run = req.the_run
    stamp = tuple(_stamp(run.path / f) for f in (GRAPH_FILE, CHECK_FILE, SUPERNODES_FILE))
    if stamp[0] is None:
        raise missing_file(run, GRAPH_FILE)

    def load() -> tuple[AttributionGraph, GraphCheck | None]:
        try:
            return open_graph_run(run.path)
        except Exception as err:  # a damaged file: say which, keep serving
            said = str(err).replace(str(run.path) + "/", "").replace(str(run.path), run.id)
            if stamp[2] is not None:  # save_supernodes reads the run too: it cannot mend it
                said += f" (if {SUPERNODES_FILE} is at fault, move it away to see the graph)"
            raise InputError(f"graph run {run.id}: cannot read it: {said}") from None

    return _cached(req, ("graph", run.path), stamp, load)


@dataclass(frozen=True)
class HarvestLink:
    """The harvest a graph run's config names: where it is, whether the viewer serves it,
    and what a hover says about it.

    Example: ``HarvestLink(Path("/runs/tc-harvest"), served_run, "")`` → latents link to it.
    """

    path: Path | None
    run: RunInfo | None
    note: str

    def href(self, layer: int, index: int) -> str | None:
        """The feature page of latent `index` of layer `layer`, when the harvest is served."""
        return unit_url(self.run, latent_site(layer), index) if self.run is not None else None


def harvest_link(req: Request) -> HarvestLink:
    """The run's harvest (config ``harvest``): found on disk, and among the served runs."""
    run = req.the_run
    spec = run.config.get("harvest")
    if not isinstance(spec, str) or not spec:
        return HarvestLink(None, None, "no harvest: the run was made without harvest=")
    given = Path(spec).expanduser()
    tries = [given] if given.is_absolute() else [Path.cwd() / given, run.path.parent / given]
    found = next((p.resolve() for p in tries if (p / "run.json").is_file()), None)
    if found is None:
        return HarvestLink(None, None, f"the run's harvest {spec} is not on this disk")
    served = next((r for r in req.app.runs.values() if r.path.resolve() == found), None)
    if served is None:
        req.app.refresh()  # it may have been written since the viewer started
        served = next((r for r in req.app.runs.values() if r.path.resolve() == found), None)
    note = "" if served is not None else (
        f"the harvest {spec} is not served by this viewer, so no feature pages "
        "(serve its folder too)"
    )  # fmt: skip
    return HarvestLink(found, served, note)


def _rounded(x: float) -> float | None:
    return float(f"{x:.4g}") if math.isfinite(x) else None


def latent_examples(
    req: Request, graph: AttributionGraph, harvest: HarvestLink
) -> tuple[dict[str, Any], str]:
    """Each latent's top examples in the harvest (for the `EXAMPLE_LATENTS` of highest
    influence), by ``"{layer}_{index}"``, and a note ("" if all went well)."""
    if harvest.path is None:
        return {}, ""
    path, stamp = harvest.path, (_stamp(req.the_run.path / GRAPH_FILE), str(harvest.path))
    infl = np.asarray(graph.influence)
    layer, index = np.asarray(graph.layer).astype(int), np.asarray(graph.index).astype(int)
    latents: list[tuple[int, int]] = []
    for i in sorted(graph.nodes_of(FEATURE, pruned=True), key=lambda i: -float(infl[i])):
        key = (int(layer[i]), int(index[i]))
        if key not in latents:
            latents.append(key)

    def load() -> tuple[dict[str, Any], str]:
        out: dict[str, Any] = {}
        store_key = ("harvest", path)
        try:
            with req.app.lock(store_key):
                store = req.app.resource(store_key, lambda: harvest_pages.open_store(path))
                sites = set(store.sites)
                for lay, idx in latents[:EXAMPLE_LATENTS]:
                    site = latent_site(lay)
                    if site not in sites or not 0 <= idx < store.n_units(site):
                        continue
                    out[f"{lay}_{idx}"] = _unit_view(store.unit(site, idx))
        except Exception as err:  # a damaged harvest: the graph still shows
            return out, f"cannot read the harvest {path.name}: {err}"
        more = len(latents) - EXAMPLE_LATENTS
        note = f"examples for the {EXAMPLE_LATENTS} latents of most influence" if more > 0 else ""
        return out, note

    return _cached(req, ("graph-examples", req.the_run.path), stamp, load)


def _unit_view(rec: Any) -> dict[str, Any]:
    """What a hover shows of one harvested latent: max, share active, top examples near their peak."""
    examples = []
    for ex in rec.top[:EXAMPLES_PER_LATENT]:
        peak = ex.max_pos if 0 <= ex.max_pos < len(ex.tokens) else 0
        lo, hi = max(0, peak - CONTEXT[0]), min(len(ex.tokens), peak + CONTEXT[1] + 1)
        examples.append({
            "tokens": [str(t) for t in ex.tokens[lo:hi]],
            "acts": [_rounded(float(a)) for a in ex.acts[lo:hi]],
            "peak": peak - lo, "max": _rounded(float(ex.max_act)),
        })  # fmt: skip
    stats = rec.stats
    return {"max": _rounded(float(stats.max)), "active": _rounded(float(stats.frac_active)),
            "examples": examples}  # fmt: skip


def hover_data(
    graph: AttributionGraph,
    harvest: HarvestLink,
    examples: dict[str, Any],
    note: str,
    post: str,
) -> dict[str, Any]:
    """What ``viewer.js`` shows on hover and needs to save supernodes, as JSON-ready data."""
    kind = np.asarray(graph.kind).astype(int)
    layer, index = np.asarray(graph.layer).astype(int), np.asarray(graph.index).astype(int)
    act, infl = np.asarray(graph.activation), np.asarray(graph.influence)
    nodes = {}
    for i in np.flatnonzero(np.asarray(graph.node_mask).astype(bool)):
        i, k = int(i), int(kind[i])
        nid = graph.node_id(i)
        entry: dict[str, Any] = {"desc": graph.describe(i), "kind": KIND_NAMES[k],
                                 "label": graph.labels.get(nid, ""), "act_name": ACT_NAMES[k],
                                 "act": _rounded(float(act[i])), "infl": _rounded(float(infl[i]))}  # fmt: skip
        if k == FEATURE:
            key = f"{layer[i]}_{index[i]}"
            entry["site"] = f"{latent_site(int(layer[i]))}:{index[i]}"
            entry["href"] = harvest.href(int(layer[i]), int(index[i]))
            entry["examples"] = key if key in examples else None
        nodes[nid] = entry
    return {"nodes": nodes, "examples": examples, "harvest_note": harvest.note, "note": note,
            "supernodes": graph.supernodes, "post": post}  # fmt: skip


def _json(data: Any) -> Any:
    """`data` with every non-finite float made None (JSON has no NaN)."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {str(k): _json(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_json(v) for v in data]
    return data


# ---------------------------------------------------------------------------- pieces


def node_rows(rows: list[dict[str, Any]], harvest: HarvestLink) -> list[dict[str, Any]]:
    """The node table's rows: the node's id (its feature page when linked) and its numbers."""
    out = []
    for r in rows:
        href = harvest.href(r["layer"], r["index"])
        out.append({"id": r["id"], "link": link(href, r["id"]) if href else r["id"],
                    "layer": r["layer"], "pos": r["pos"], "token": show_token(r["token"]),
                    "act": num(r["activation"]), "infl": num(r["influence"]),
                    "label": r["label"]})  # fmt: skip
    return out


def logit_rows(graph: AttributionGraph, check: GraphCheck | None) -> list[dict[str, Any]]:
    """The logit nodes, most probable first: token, probability, id, whether the check's target."""
    act = np.asarray(graph.activation)
    logits = sorted(graph.nodes_of(LOGIT), key=lambda i: -float(act[i]))
    target = check.target if check is not None else None
    return [{"token": show_token(graph.logit_token(i)), "prob": share(float(act[i])),
             "id": graph.node_id(i), "target": graph.node_id(i) == target}
            for i in logits]  # fmt: skip


def check_view(graph: AttributionGraph, check: GraphCheck) -> dict[str, Any]:
    """The check as shown: per checked latent its description and the target logit's change
    the graph predicts, measured in the model and, where the check has it, measured with
    every error term frozen (the replacement model); the Spearman correlations."""
    ids = {nid: i for i, nid in enumerate(graph.node_ids())}
    rows = check.rows()
    frozen = all("measured_frozen_errors" in r for r in rows) and bool(rows)
    return {
        "rows": [{"id": r["node"], "desc": graph.describe(ids[r["node"]]) if r["node"] in ids else "",
                  "predicted": num(r["predicted"]), "measured": num(r["measured"]),
                  "frozen": num(r.get("measured_frozen_errors"))} for r in rows],
        "frozen": frozen,
        "target": check.target,
        "factor": "zero-ablated" if check.factor == 0 else f"scaled by {check.factor:g}",
        "rho": [(label, num(getattr(check, name, None)), name) for label, name in (
            ("target logit, in the model", "logit_correlation"),
            ("downstream latents, in the model", "downstream_correlation"),
            ("target logit, errors frozen", "frozen_logit_correlation"),
            ("downstream latents, errors frozen", "frozen_downstream_correlation"),
        ) if hasattr(check, name)],
    }  # fmt: skip


def supernode_rows(graph: AttributionGraph) -> list[dict[str, Any]]:
    """The saved supernodes: name, members (id and description)."""
    ids = {nid: i for i, nid in enumerate(graph.node_ids())}
    return [{"name": g[0], "members": [(m, graph.describe(ids[m])) for m in g[1:] if m in ids]}
            for g in graph.supernodes]  # fmt: skip


def path_rows(graph: AttributionGraph) -> list[str]:
    """The strongest paths into the top logit, each as its nodes' descriptions."""
    try:
        paths = graph.strongest_paths(5)
    except (ValueError, MechscopeError):  # no logits, or an empty graph
        return []
    return [" → ".join(graph.describe(i) for i in p) for p in paths]


def _facts(run: RunInfo, graph: AttributionGraph, harvest: HarvestLink) -> dict[str, object]:
    n_kept = int(np.asarray(graph.node_mask).astype(bool).sum())
    n_edges = int(np.asarray(graph.edge_mask).astype(bool).sum())
    cfg = graph.config
    n_latents = len(graph.nodes_of(FEATURE))
    if harvest.run is not None:
        shown: object = link(url("run", harvest.run.id), harvest.run.id, id="graph-harvest")
    elif harvest.path is not None:
        shown = render('{p} <span class="muted">(not served here)</span>', p=str(harvest.path))
    else:
        shown = run.config.get("harvest") or "—"
    return {
        "model": graph.model or run.model or "—",
        "prompt": render('<code class="prompt">{p}</code>', p=graph.prompt),
        "tokens": len(graph.tokens),
        "transcoders": graph.transcoders or run.config.get("transcoders") or "—",
        "harvest": shown,
        "latents": f"{cfg.get('active_features', n_latents)} active, "
        f"{cfg.get('expanded_features', n_latents)} expanded",
        "pruned graph": f"{n_kept} of {graph.n_nodes} nodes, {n_edges} edges "
        f"(node threshold {graph.node_threshold:g}, edge threshold {graph.edge_threshold:g})",
        "finished": run.finished or "—",
    }


def _top_arg(req: Request) -> int | None:
    """``?top=`` as a number of latents (None: all of them)."""
    raw = req.arg("top", str(TOP_NODES))
    if raw == "all":
        return None
    if not (raw.isascii() and raw.isdigit()) or not 0 < len(raw) <= 6 or int(raw) == 0:
        raise InputError(f"top is a number of latents (1 to 999999) or 'all', not {raw[:40]!r}")
    return int(raw)


def downloads(run: RunInfo) -> list[Markup]:
    """Links to the run's figures and result files that exist."""
    files = [f"figures/graph.{f}" for f in ("png", "svg", "html")]
    files += [NEURONPEDIA_FILE, GRAPH_FILE, CHECK_FILE, SUPERNODES_FILE]
    return [download(run, f) for f in files if (run.path / f).is_file()]


# ---------------------------------------------------------------------------- pages


@home(*KINDS)
def graph_home(req: Request) -> Document:
    """The graph drawn, its scores and logits, top latents, check, supernodes and files."""
    run = req.the_run
    graph, check = graph_of(req)
    harvest = harvest_link(req)
    examples, note = latent_examples(req, graph, harvest)
    top = _top_arg(req)
    n_latents = len(graph.nodes_of(FEATURE, pruned=True))
    rows = graph.top_features(n_latents if top is None else top)
    post = url("run", run.id, "supernodes")
    data = _json(hover_data(graph, harvest, examples, note, post))
    scores = graph.scores
    body = template(
        "graph/home.html",
        facts=_facts(run, graph, harvest),
        drawing=layout(graph),
        data=json.dumps(data, ensure_ascii=False, separators=(",", ":")),
        harvest_note=harvest.note,
        scores=[
            (name, num(scores.get(key)), num(scores.get(f"pruned_{key}")), doc)
            for key, name, doc in (
                (
                    "replacement",
                    "replacement",
                    "share of the influence on the logits that "
                    "starts at token embeddings rather than error nodes",
                ),
                (
                    "completeness",
                    "completeness",
                    "share of the nodes' input that comes from "
                    "non-error nodes, weighted by influence",
                ),
            )
        ],  # fmt: skip
        logits=logit_rows(graph, check),
        nodes=node_rows(rows, harvest),
        n_latents=n_latents,
        shown=len(rows),
        all_url=url("run", run.id, top="all") if top is not None and n_latents > top else None,
        check=None if check is None else check_view(graph, check),
        paths=path_rows(graph),
        supernodes=supernode_rows(graph),
        supernodes_url=post,
        export_url=url("run", run.id, NEURONPEDIA_FILE),
        files=downloads(run),
    )
    return Document(f"Attribution graph {run.id}", body)


def parse_supernodes(data: Any, ids: set[str]) -> list[list[str]]:
    """`data` (a POST's JSON) checked as supernodes of a graph with node `ids` by the library's
    `check_supernodes` (names stripped first)."""
    if isinstance(data, list):
        data = [
            [g[0].strip(), *g[1:]] if isinstance(g, list) and g and isinstance(g[0], str) else g
            for g in data
        ]
    check_supernodes(data, ids)
    return [list(g) for g in data]


def _json_response(data: Any, status: int = 200) -> Response:
    body = json.dumps(_json(data), ensure_ascii=False).encode("utf-8")
    return Response(body, status, "application/json", {"Cache-Control": "no-store"})


@page("/run/{run}/supernodes", kinds=KINDS, title="Supernodes", methods=("GET",))
def supernodes_get(req: Request) -> Response:
    """The saved supernodes, as JSON: ``[[name, node id, …], …]``."""
    graph, _ = graph_of(req)
    return _json_response(graph.supernodes)


@page("/run/{run}/supernodes", kinds=KINDS, title="Supernodes", methods=("POST",))
def supernodes_post(req: Request) -> Response:
    """Replace the saved supernodes with the JSON list sent; 400 with a message if it is bad."""
    run = req.the_run
    if len(req.body) > MAX_SUPERNODE_BYTES:
        return _json_response(
            {"error": f"the body has {len(req.body)} bytes; at most {MAX_SUPERNODE_BYTES}"}, 413
        )
    try:
        graph, _ = graph_of(req)
        groups = parse_supernodes(req.json(), set(graph.node_ids()))
        with req.app.lock(("supernodes", run.path)):
            save_supernodes(run.path, groups)
    except NotFound:
        raise
    except MechscopeError as err:
        said = str(err).replace(str(run.path) + "/", "").replace(str(run.path), run.id)
        return _json_response({"error": said}, 400)
    return _json_response({"saved": len(groups), "supernodes": groups})


@page(f"/run/{{run}}/{NEURONPEDIA_FILE}", kinds=KINDS, title="Neuronpedia export")
def neuronpedia_export(req: Request) -> Response:
    """The graph as Neuronpedia's JSON, exported now, with the saved supernodes in its qParams."""
    run = req.the_run
    graph, _ = graph_of(req)
    slug = run.path.name
    try:
        saved = json.loads((run.path / NEURONPEDIA_FILE).read_text())
        slug = str(saved["metadata"]["slug"]) or slug
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no earlier export (or a damaged one): the folder's name, as graph_run gives
    body = json.dumps(_json(graph.neuronpedia(slug)), ensure_ascii=False).encode("utf-8")
    headers = {"Content-Disposition": f'attachment; filename="{NEURONPEDIA_FILE}"',
               "Cache-Control": "no-store"}  # fmt: skip
    return Response(body, 200, "application/json", headers)
