"""Attribution-graph runs in the viewer: the graph drawn, its tables, its check, supernodes.

Real graph runs of the tiny Llama with a random transcoder set, made once for the
module: one without a check or harvest, one with both (its harvest of the
transcoder latents served beside it), one whose prompt and labels are markup.
Pages are read through Starlette's test client; supernodes are posted to copies
of the full run, and one real server is driven by real Chromium.
"""

from __future__ import annotations

import html
import json
import re
import shutil
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import markupsafe
import numpy as np
import pytest
from starlette.testclient import TestClient

from conftest import text_of
from mechscope.graphs.results import GRAPH_FILE, MAX_NAME, AttributionGraph
from mechscope.graphs.runs import open_graph_run
from mechscope.viewer.app import App
from mechscope.viewer.pages.graph import MAX_SUPERNODE_BYTES, TOP_NODES
from mechscope.viewer.pages.graph_drawing import MAX_EDGES
from mechscope.viewer.server import asgi

PROMPT = "hello world, this"
XSS = "<script>alert(1)</script>"
HOSTILE_PROMPT = '<b>"x" & <script>'
SITE = "blocks.{}.mlp.tc.latents"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """``graph-plain`` (no check, no harvest), ``graph-full`` (check and a served harvest),
    ``graph-hostile`` (markup in its prompt and labels), under one folder of runs."""
    from mechscope.graphs import graph_run
    from mechscope.harvest import harvest
    from mechscope.testing import tiny_model
    from mechscope.transcoders import TranscoderSet
    from mechscope.transcoders.attach import attach_transcoders

    root = tmp_path_factory.mktemp("graph") / "runs"
    model = tiny_model("llama")
    tcs = TranscoderSet.build(model, width=32, k=4, skip=True, seed=0)
    with attach_transcoders(model, tcs):
        harvest(model, "fortunes", out=root / "tc-harvest", sites=SITE.format("*"),
                tokens=40 * 16, window=16, k=5, n_random=3, batch_size=4,
                progress=False)  # fmt: skip
    args = dict(progress=False, batch=16)
    graph_run(model, tcs, PROMPT, root / "graph-plain", check_top=0, **args)
    graph_run(model, tcs, PROMPT, root / "graph-full", check_top=5,
              harvest=str(root / "tc-harvest"), **args)  # fmt: skip
    hostile = graph_run(model, tcs, HOSTILE_PROMPT, root / "graph-hostile", check_top=0, **args)
    graph = AttributionGraph.load(hostile / GRAPH_FILE, arrays="numpy")
    top = graph.top_features(2)
    graph.with_labels({top[0]["id"]: XSS, top[1]["id"]: "& <img src=x onerror=alert(1)>"}).save(
        hostile / GRAPH_FILE
    )
    for name in ("graph-post", "graph-ui", "graph-cut", "graph-unfinished", "graph-bad-groups"):
        shutil.copytree(root / "graph-full", root / name)  # written to, or broken, below
    whole = (root / "graph-cut" / GRAPH_FILE).read_bytes()
    (root / "graph-cut" / GRAPH_FILE).write_bytes(whole[:100])
    (root / "graph-unfinished" / GRAPH_FILE).unlink()
    (root / "graph-bad-groups" / "supernodes.json").write_text('[["a", "0_999_0"]]')
    return SimpleNamespace(root=root, harvest=root / "tc-harvest")


@pytest.fixture(scope="module")
def client(runs: SimpleNamespace) -> Iterator[TestClient]:
    app = App([runs.root])
    yield TestClient(asgi(app))
    app.close()


def graph_data(page: str) -> dict[str, Any]:
    """The JSON the page hands to viewer.js (the figure's ``data-graph`` attribute)."""
    found = re.search(r'<figure class="attribution-graph" id="graph" data-graph="([^"]*)"', page)
    assert found is not None
    return json.loads(html.unescape(found.group(1)))


def table_rows(page: str, table_id: str) -> list[list[str]]:
    """The text of each body cell of the table with `table_id`, row by row."""
    found = re.search(rf'<table [^>]*id="{table_id}".*?<tbody>(.*?)</tbody>', page, re.DOTALL)
    assert found is not None, table_id
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", found.group(1), re.DOTALL)
    return [[text_of(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", r, re.DOTALL)] for r in rows]


def get_page(client: TestClient, path: str) -> str:
    reply = client.get(path)
    assert reply.status_code == 200, (path, reply.text[-2000:])
    assert reply.headers["content-type"].startswith("text/html")
    return reply.text


# ---------------------------------------------------------------------------- the page


def test_a_run_without_check_or_harvest_draws_its_pruned_graph(
    client: TestClient, runs: SimpleNamespace
) -> None:
    graph, check = open_graph_run(runs.root / "graph-plain")
    assert check is None
    page = get_page(client, "/run/graph-plain")
    kept = [graph.node_id(int(i)) for i in np.flatnonzero(graph.node_mask)]
    drawn = re.findall(r'<(?:circle|rect) class="node (\w+)" data-id="([^"]+)"', page)
    assert sorted(i for _, i in drawn) == sorted(kept)
    errors = {graph.node_id(i) for i in graph.nodes_of(1, pruned=True)}
    assert {i for k, i in drawn if k == "error"} == errors
    assert set(re.findall(r"<(\w+) class=\"node error\"", page)) == {"rect"}
    assert page.count('<line class="edge ') == min(len(graph.edges()), MAX_EDGES)
    for token in set(graph.tokens):  # the prompt along the bottom
        assert f">{html.escape(token.replace(chr(10), '↵'), quote=False)}<title>" in page
    data = graph_data(page)
    assert set(data["nodes"]) == set(kept)
    first = graph.top_features(1)[0]
    node = data["nodes"][first["id"]]
    assert node["desc"] == graph.describe(first["node"])
    assert node["href"] is None and node["examples"] is None
    assert "without harvest=" in data["harvest_note"]
    assert "No check.safetensors" in page
    found = re.findall(r'<th scope="row">(\w+)</th><td>([^<]*)</td><td>([^<]*)</td>', page)
    scores = {name: (whole, pruned) for name, whole, pruned in found}
    assert scores["replacement"] == (
        f"{graph.scores['replacement']:.4g}",
        f"{graph.scores['pruned_replacement']:.4g}",
    )
    assert scores["completeness"][1] == f"{graph.scores['pruned_completeness']:.4g}"
    probs = [r[1] for r in table_rows(page, "logits")]
    acts = sorted((float(graph.activation[i]) for i in graph.nodes_of(3)), reverse=True)
    assert probs == [f"{p:.1%}" for p in acts]
    assert html.escape(PROMPT) in page


def test_the_node_table_lists_top_features_in_order(
    client: TestClient, runs: SimpleNamespace
) -> None:
    graph, _ = open_graph_run(runs.root / "graph-full")
    rows = table_rows(get_page(client, "/run/graph-full"), "node-table")
    expected = graph.top_features(TOP_NODES)
    assert len(rows) == len(expected) > 0
    for cells, row in zip(rows, expected, strict=True):
        assert cells[1:] == [
            row["id"], str(row["layer"]), str(row["pos"]), row["token"],
            f"{row['activation']:.4g}", f"{row['influence']:.4g}", row["label"],
        ]  # fmt: skip
    three = table_rows(get_page(client, "/run/graph-full?top=3"), "node-table")
    assert [r[1] for r in three] == [r["id"] for r in graph.top_features(3)]
    every = table_rows(get_page(client, "/run/graph-full?top=all"), "node-table")
    assert len(every) == len(graph.nodes_of(0, pruned=True))
    for bad in ("0", "-1", "x", "1e3", "9" * 40):
        reply = client.get(f"/run/graph-full?top={bad}")
        assert reply.status_code == 400 and "top is a number" in html.unescape(reply.text)


def test_a_run_with_check_and_harvest_links_latents_and_shows_the_check(
    client: TestClient, runs: SimpleNamespace
) -> None:
    graph, check = open_graph_run(runs.root / "graph-full")
    assert check is not None
    page = get_page(client, "/run/graph-full")
    rows = table_rows(page, "check-table")
    assert [r[0].split()[0] for r in rows] == check.nodes
    assert [r[1:3] for r in rows] == [
        [f"{r['predicted']:.4g}", f"{r['measured']:.4g}"] for r in check.rows()
    ]
    if "measured_frozen_errors" in check.rows()[0]:  # measured in the replacement model too
        assert [r[3] for r in rows] == [f"{r['measured_frozen_errors']:.4g}" for r in check.rows()]
    rho = dict(re.findall(r'<dd id="rho-(\w+)">([^<]*)</dd>', page))
    for name in ("logit_correlation", "downstream_correlation", "frozen_logit_correlation"):
        if hasattr(check, name):
            value = getattr(check, name)
            assert rho[name] == ("—" if np.isnan(value) else f"{value:.4g}"), name
    assert len(rho) >= 2
    assert f"<code>{check.target}</code>" in page and "zero-ablated" in page
    data = graph_data(page)
    assert data["harvest_note"] == ""
    for row in graph.top_features(5):
        node = data["nodes"][row["id"]]
        href = f"/run/tc-harvest/unit/{SITE.format(row['layer'])}/{row['index']}"
        assert node["href"] == href and f'<a href="{href}">{row["id"]}</a>' in page
        assert client.get(href).status_code == 200  # the harvest's own feature page
        examples = data["examples"][node["examples"]]["examples"]
        assert examples and all(0 <= e["peak"] < len(e["tokens"]) for e in examples)
    assert 'id="graph-harvest"' in page  # the facts link the harvest run
    for name in ("figures/graph.png", "figures/graph.svg", "figures/graph.html",
                 "neuronpedia.json", "check.safetensors"):  # fmt: skip
        assert f'href="/run/graph-full/files/{name}"' in page, name
        assert client.get(f"/run/graph-full/files/{name}").status_code == 200


def test_a_harvest_the_viewer_does_not_serve_is_not_linked(runs: SimpleNamespace) -> None:
    app = App([runs.root / "graph-full"])  # the graph run alone
    try:
        page = get_page(TestClient(asgi(app)), "/run/graph-full")
    finally:
        app.close()
    data = graph_data(page)
    assert "not served by this viewer" in data["harvest_note"]
    assert all(n.get("href") is None for n in data["nodes"].values())
    assert "/unit/" not in page
    assert any(n.get("examples") for n in data["nodes"].values())  # still read from disk


def test_markup_in_the_prompt_and_labels_is_escaped(
    client: TestClient, runs: SimpleNamespace
) -> None:
    graph, _ = open_graph_run(runs.root / "graph-hostile")
    page = get_page(client, "/run/graph-hostile")
    main = page.split("<main>", 1)[1]
    assert XSS not in main and "<img" not in main and "<b>" not in main
    assert str(markupsafe.escape(HOSTILE_PROMPT)) in main
    assert f"<td>{html.escape(XSS, quote=False)}</td>" in main  # the label, in the table
    data = graph_data(page)  # the hover data: the same text, as data
    labelled = [n for n in data["nodes"].values() if n["label"] == XSS]
    assert len(labelled) == 1 and labelled[0]["desc"].endswith(XSS)
    assert re.findall(r"<script\b[^>]*>", page) == ['<script src="/static/viewer.js" defer>']
    assert graph.prompt == HOSTILE_PROMPT


# ---------------------------------------------------------------------------- supernodes


def post(client: TestClient, run: str, body: Any, **kw: Any) -> Any:
    return client.post(f"/run/{run}/supernodes", json=body, **kw)


def test_supernodes_are_checked_saved_and_exported(
    client: TestClient, runs: SimpleNamespace
) -> None:
    path = runs.root / "graph-post"
    graph, _ = open_graph_run(path)
    a, b, c = (r["id"] for r in graph.top_features(3))
    bad: list[tuple[Any, str]] = [
        ({"name": "x"}, "JSON list"),
        ([["only a name"]], "a node or more"),
        ([[7, a]], "must be text"),
        ([["  ", a]], "must be text"),
        ([["x" * (MAX_NAME + 1), a]], f"at most {MAX_NAME} characters"),
        ([["two\nlines", a]], "one line"),
        ([["x", "0_999_0"]], "no node '0_999_0'"),
        ([["x", 5]], "no node 5"),
        ([["x", a, a]], "twice"),
        ([["x", a], ["x", b]], "two supernodes are named"),
        ([[XSS, a, {"id": b}]], "no node"),
    ]
    for body, message in bad:
        reply = post(client, "graph-post", body)
        assert reply.status_code == 400, (body, reply.text)
        assert message in reply.json()["error"], (body, reply.json())
    raw = [
        (b"[[", "application/json", "not JSON"),
        (b"\xff\xfe", "application/json", "not UTF-8"),
        (b"[" * 100_000, "application/json", "not read"),
        (b'[["a", "b"]]', "text/plain", "send JSON"),
        (b"name=x&nodes=" + a.encode(), "application/x-www-form-urlencoded", "send JSON"),
    ]
    for content, ctype, message in raw:
        reply = client.post("/run/graph-post/supernodes", content=content,
                            headers={"content-type": ctype})  # fmt: skip
        assert reply.status_code == 400 and message in reply.json()["error"], (
            content[:20],
            reply.text[:300],
        )
    big = json.dumps([["x", a]] + [["n" + str(i), a] for i in range(30_000)]).encode()
    assert MAX_SUPERNODE_BYTES < len(big) < 1 << 20
    reply = client.post("/run/graph-post/supernodes", content=big,
                        headers={"content-type": "application/json"})  # fmt: skip
    assert reply.status_code == 413 and "at most" in reply.json()["error"]
    assert not (path / "supernodes.json").exists()  # nothing bad was written
    assert client.get("/run/graph-post/supernodes").json() == []

    groups = [[XSS, a, b], ["  second  ", c]]
    reply = post(client, "graph-post", groups)
    assert reply.status_code == 200, reply.text
    saved = [[XSS, a, b], ["second", c]]
    assert reply.json() == {"saved": 2, "supernodes": saved}
    assert open_graph_run(path)[0].supernodes == saved
    assert client.get("/run/graph-post/supernodes").json() == saved
    page = get_page(client, "/run/graph-post")  # a reload shows them, escaped
    names = re.findall(r'<td class="supernode-name">([^<]*)</td>', page)
    assert names == [html.escape(XSS, quote=False), "second"]
    assert graph_data(page)["supernodes"] == saved
    export = client.get("/run/graph-post/neuronpedia.json")
    assert export.status_code == 200 and "attachment" in export.headers["content-disposition"]
    assert export.json()["qParams"]["supernodes"] == saved
    assert export.json()["metadata"]["slug"] == "graph-full"  # the slug its export was given
    assert post(client, "graph-post", []).json() == {"saved": 0, "supernodes": []}
    assert open_graph_run(path)[0].supernodes == []


def test_other_methods_and_other_kinds_get_405(client: TestClient) -> None:
    for method in ("PUT", "DELETE", "PATCH"):
        reply = client.request(method, "/run/graph-plain/supernodes")
        assert reply.status_code == 405 and "POST" in reply.headers["allow"]
    reply = client.post("/run/tc-harvest/supernodes", json=[])  # a harvest run: no supernodes
    assert reply.status_code == 405 and reply.headers["allow"] == "GET, HEAD"
    assert client.get("/run/tc-harvest/supernodes").status_code == 404
    assert client.post("/run/graph-plain", json=[]).status_code == 405
    assert client.post("/run/nope/supernodes", json=[]).status_code == 404


def test_a_broken_or_unfinished_run_gets_a_page_that_says_so(client: TestClient) -> None:
    cases = {
        "graph-cut": (400, "graph.safetensors is not a readable result file"),
        "graph-unfinished": (404, "has no graph.safetensors: it did not finish"),
        "graph-bad-groups": (400, "no node '0_999_0'"),
    }
    for run, (status, message) in cases.items():
        for path in (f"/run/{run}", f"/run/{run}/supernodes", f"/run/{run}/neuronpedia.json"):
            reply = client.get(path)
            assert reply.status_code == status and message in html.unescape(reply.text), path
            assert "Traceback" not in reply.text
        reply = post(client, run, [])
        assert reply.status_code == status and message in html.unescape(reply.text), run
    hint = html.unescape(client.get("/run/graph-bad-groups").text)
    assert "if supernodes.json is at fault, move it away" in hint


# ---------------------------------------------------------------------------- Chromium


@pytest.fixture(scope="module")
def base(runs: SimpleNamespace) -> Iterator[str]:
    """A real server on 127.0.0.1 (a free port) serving the graph runs and the harvest."""
    from mechscope.viewer import serve

    with serve([runs.root]) as viewer:
        yield viewer.url


def test_in_chromium_hover_shows_a_node_and_a_selection_is_saved_as_a_supernode(
    page: Any, base: str, runs: SimpleNamespace
) -> None:
    from playwright.sync_api import expect

    path = runs.root / "graph-ui"
    graph, _ = open_graph_run(path)
    top = graph.top_features(3)
    node = page.locator(f'#graph-svg .node[data-id="{top[0]["id"]}"]')
    page.goto(base + "run/graph-ui")
    node.hover()
    info = page.locator("#graph-info")
    expect(info.locator(".node-desc")).to_have_text(graph.describe(top[0]["node"]))
    expect(info).to_contain_text(f"influence{top[0]['influence']:.4g}")
    expect(info.locator(".tok").first).to_be_visible()  # its top examples from the harvest
    node.click(modifiers=["Shift"])
    page.locator(f'#graph-svg .node[data-id="{top[1]["id"]}"]').click(modifiers=["Control"])
    page.locator(f'#node-table input[data-id="{top[2]["id"]}"]').check()
    expect(page.locator("#selection-count")).to_contain_text("3 nodes selected")
    expect(page.locator("#graph-svg .node.selected")).to_have_count(3)
    page.locator("#supernode-name").fill("capital & <b>co</b>")
    page.locator("#supernode-save").click()
    expect(page.locator("#supernode-table .supernode-name")).to_have_text(["capital & <b>co</b>"])
    assert open_graph_run(path)[0].supernodes == [
        ["capital & <b>co</b>", top[0]["id"], top[1]["id"], top[2]["id"]]
    ]
    page.locator("#supernode-name").fill("")
    page.locator("#supernode-save").click()  # no name: said, nothing sent
    expect(page.locator("#supernode-status")).to_have_text("give the supernode a name")
    page.locator(f'#graph-svg .node[data-id="{top[0]["id"]}"]').click()  # opens its page
    page.wait_for_url(f"**/run/tc-harvest/unit/{SITE.format(top[0]['layer'])}/{top[0]['index']}")
    assert page.errors == [] and page.dialogs == []


def test_in_chromium_hostile_labels_are_text(page: Any, base: str, runs: SimpleNamespace) -> None:
    from playwright.sync_api import expect

    graph, _ = open_graph_run(runs.root / "graph-hostile")
    first = graph.top_features(1)[0]
    page.goto(base + "run/graph-hostile")
    page.locator(f'#graph-svg .node[data-id="{first["id"]}"]').hover()
    expect(page.locator("#graph-info .node-desc")).to_have_text(graph.describe(first["node"]))
    expect(page.locator("#graph-info")).to_contain_text(XSS)
    assert page.evaluate("document.querySelectorAll('main script, main img, main b').length") == 0
    assert page.errors == [] and page.dialogs == []
