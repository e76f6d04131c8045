"""Feature-visualisation, weight-circuit and optimised-prompt runs in the viewer.

Run folders of the kinds ``viz``, ``weights-conv``, ``weights-lm`` and
``prompts`` are written by hand, file for file as their runs write them (JSON
with known numbers, tiny PNGs, plotly-like HTML beside a stand-in script), so
no model runs; tokens and texts are hostile on purpose. Copies with a file
broken, removed or malformed check the error pages. One real server serves
them all.
"""

from __future__ import annotations

import html
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import markupsafe
import pytest
import torch

from conftest import (
    PLOTLY_LIKE,
    assert_error_pages,
    copy_run,
    edit_json,
    fetch,
    get_ok,
    make_run,
    png_bytes,
    text_of,
)
from mechscope.testing import edit_result
from mechscope.viewer import serve
from mechscope.weights.results import (
    ConvWeights,
    CopyingScores,
    HeadCircuit,
    HeadCircuits,
    NeuronWiring,
)

XSS = "<script>alert(1)</script>"
MODEL = {"name": "tiny-net", "source": "/nowhere", "weights_sha256": None, "dtype": "float32"}
PAGES = Path(__file__).resolve().parents[2] / "src" / "mechscope" / "viewer" / "pages"

COPYING = CopyingScores(
    torch.tensor([[0.125, 0.5, -0.25, 0.0], [0.75, 0.375, 0.0625, 0.25], [0.9375, 0.1, 0.2, 0.3]])
)
HEADS = HeadCircuits([
    HeadCircuit(
        1, 2, 0.0625,
        ov={" Paris": [(" Paris", 7.5), ("Paris", 6.25), (XSS, 1.0)],
            "\n": [("\t", 2.0), ("&", 1.5)]},
        qk={" Paris": [(" France", 3.5), ("  ", 1.25)]},
        composition={"q": [(0, 1, 0.25), (0, 3, 0.125)], "k": [], "v": [(0, 0, 0.5)]},
    ),
    HeadCircuit(
        2, 0, 0.9375, ov={" cat": [(" cats", 4.0)]}, qk={" cat": [("<b>", 2.0)]},
        composition={"q": [(1, 2, 0.75)], "k": [(0, 0, 0.0625)], "v": []},
    ),
])  # fmt: skip


def conv_weights() -> ConvWeights:
    """192 channels over 5×5: 139 and 7 excite most, 97 inhibits most (then 139, a little)."""
    maps = torch.zeros(192, 5, 5)
    maps[139, 2, 2], maps[139, 4, 4] = 1.6875, -0.0234375
    maps[7, 1, 4] = 1.25
    maps[97, 0, 2] = -1.625
    return ConvWeights("net._blocks.11", "net._blocks.12", 5, maps)


def wiring(layer: int, neuron: int) -> NeuronWiring:
    """Neuron `layer`.`neuron`: upstream neurons 0.5 +0.75, 0.2 +0.5, 0.9 −0.625; heads 0.1, 1.0."""
    neurons = torch.zeros(layer, 16)
    neurons[0, 5], neurons[0, 2], neurons[0, 9] = 0.75, 0.5, -0.625
    heads = torch.zeros(layer + 1, 4)
    heads[0, 1], heads[1, 0] = 1.5, 0.25
    return NeuronWiring(
        layer=layer, neuron=neuron, via="gate", neurons=neurons, heads=heads,
        embed=[(" cat", 2.5), (XSS, 1.5)], logits_up=[(" dog", 3.0)], logits_down=[("\n", 1.0)],
    )  # fmt: skip


def prompt(method: str, text: str, act: float, nll: float, projected: float | None = None) -> dict:
    return {"site": "s", "unit": 0, "method": method, "ids": [5, 6], "text": text,
            "activation": act, "nll": nll, "history": [1.0, 2.0],
            "projected_activation": projected}  # fmt: skip


COMPARISONS = [
    {"site": "blocks.3.mlp.post", "unit": 12, "top_act": 4.0,
     "top_context": ["<|endoftext|>", "The", " cat", "\n", XSS],
     "gcg": prompt("gcg", " cat <b>sat</b>", 6.0, 3.25),
     "soft": prompt("soft", " dog\n&", 12.5, 5.5, 2.5)},
    {"site": "blocks.5.mlp.post", "unit": 3, "top_act": 8.0, "top_context": [" a", " b"],
     "gcg": prompt("gcg", "x y", 2.0, 4.0), "soft": None},
    {"site": "blocks.5.mlp.post", "unit": 0, "top_act": 0.0, "top_context": ["z"],
     "gcg": prompt("gcg", "zz", 1.0, 2.5), "soft": None},
]  # fmt: skip


def comparisons(rows: list[dict]) -> Any:
    """The `PromptComparisons` of a prompts run, from rows written as dicts."""
    from mechscope.prompts_results import PromptComparisons, PromptResult, UnitComparison

    return PromptComparisons([
        UnitComparison(r["site"], r["unit"], PromptResult(**r["gcg"]), r["top_act"],
                       r["top_context"], PromptResult(**r["soft"]) if r["soft"] else None)
        for r in rows
    ])  # fmt: skip


def figures(run: Path, *stems: str) -> None:
    """PNG, SVG and plotly-like HTML of each figure, with the script the HTML loads."""
    folder = run / "figures"
    folder.mkdir()
    (folder / "fake-plotly.js").write_text(
        "function drawPlot() { document.getElementById('plot').textContent = 'drawn by js'; }"
    )
    for stem in stems:
        (folder / f"{stem}.png").write_bytes(png_bytes())
        (folder / f"{stem}.svg").write_text(
            '<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"></svg>'
        )
        (folder / f"{stem}.html").write_text(PLOTLY_LIKE)


def write(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("featureviz") / "runs"
    viz = make_run(
        root / "viz-x",
        "viz",
        {"model": MODEL, "site": "net._blocks.8", "units": [0, 1, 5], "size": 48, "steps": 16,
         "thresholds": [0, 4], "lr": 0.05, "seed": 0},
        {"finished": "2026-01-01T00:00:00+00:00",
         "summary": "3 channels of net._blocks.8, 16 steps at 48 px"},
    )  # fmt: skip
    figures(viz, "grid", "strip")
    (viz / "rendering.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    conv = make_run(
        root / "wc-x",
        "weights-conv",
        {"model": MODEL, "src": "net._blocks.11", "dst": "net._blocks.12", "unit": 5, "k": 2,
         "size": 224, "viz_size": 96, "viz_steps": 64, "seed": 0},
        {"summary": "net._blocks.11 → net._blocks.12:5, 192 input channels over 5×5"},
    )  # fmt: skip
    conv_weights().save(conv / "weights.safetensors")
    figures(conv, "circuit")
    lm = make_run(
        root / "wl-x",
        "weights-lm",
        {"model": MODEL, "neurons": [[1, 7], [2, 3]], "heads": [[1, 2], [2, 0]], "k": 10},
        {"summary": "2 heads, 2 neurons; highest copying score: head L2H0 (0.938)"},
    )
    COPYING.save(lm / "copying.safetensors")
    HEADS.save(lm / "heads.safetensors")
    wiring(1, 7).save(lm / "neurons" / "1-7" / "wiring.safetensors")
    wiring(2, 3).save(lm / "neurons" / "2-3" / "wiring.safetensors")
    figures(lm, "copying")
    prompts = make_run(
        root / "pr-x",
        "prompts",
        {"model": MODEL, "units": [[c["site"], c["unit"]] for c in COMPARISONS],
         "harvest": "runs/harvest", "soft_steps": 10, "gcg": {"steps": 8, "length": 2}},
        {"summary": "GCG beats the top dataset example on 2 of 3 units"},
    )  # fmt: skip
    comparisons(COMPARISONS).save(prompts / "comparisons.safetensors")
    figures(prompts, "prompts")
    no_soft = make_run(
        root / "pr-no-soft",
        "prompts",
        {"model": MODEL, "soft_steps": 0},
        {"extra": {"summary": "GCG beats the top dataset example on 0 of 1 units"}},
    )
    comparisons(COMPARISONS[1:2]).save(no_soft / "comparisons.safetensors")

    def copy(name: str, to: str) -> Path:
        return copy_run(root, name, to)

    edit = edit_json

    edit(
        copy("viz-x", "viz-odd") / "config.json",
        lambda d: d.update(units="0-3", site=XSS, steps="many", thresholds=[4, "x", 0]),
    )
    shutil.rmtree(copy("viz-x", "viz-no-figures") / "figures")
    (copy("wc-x", "wc-bad") / "weights.safetensors").write_text("{ not safetensors")
    (copy("wc-x", "wc-none") / "weights.safetensors").unlink()
    flat = {"maps": torch.zeros(192, 25)}
    edit_result(copy("wc-x", "wc-odd") / "weights.safetensors", lambda r, t: t.update(flat))
    (copy("wl-x", "wl-bad-heads") / "heads.safetensors").write_bytes(b"\x00garbage")
    (copy("wl-x", "wl-no-copying") / "copying.safetensors").unlink()
    edit_result(
        copy("wl-x", "wl-odd-copying") / "copying.safetensors",
        lambda r, t: t.update(scores=torch.zeros(12)),
    )
    HeadCircuits([]).save(copy("wl-x", "wl-no-heads") / "heads.safetensors")
    edit_result(
        copy("wl-x", "wl-odd-wiring") / "neurons" / "1-7" / "wiring.safetensors",
        lambda r, t: t.update(neurons=torch.zeros(16)),
    )
    (copy("wl-x", "wl-no-wiring") / "neurons" / "2-3" / "wiring.safetensors").unlink()
    (copy("pr-x", "pr-bad") / "comparisons.safetensors").write_text("[{")
    (copy("pr-x", "pr-none") / "comparisons.safetensors").unlink()
    edit_result(
        copy("pr-x", "pr-odd") / "comparisons.safetensors",
        lambda r, _: r["units"][0]["fields"]["top_context"].append(3),
    )
    return root


@pytest.fixture(scope="module")
def base(root: Path) -> Iterator[str]:
    with serve([root]) as viewer:
        yield viewer.url.rstrip("/")


def facts(text: str) -> dict[str, str]:
    return {text_of(k): text_of(v) for k, v in re.findall(r"<dt>(.*?)</dt><dd>(.*?)</dd>", text)}


def h1(text: str) -> str:
    found = re.search(r"<h1>(.*?)</h1>", text)
    assert found is not None
    return text_of(found[1])


def assert_png_figure(base: str, text: str, run: str, stem: str, iframe: str = "details") -> None:
    """The figure's PNG shown (or its HTML, `iframe`="shown"), with links to every format."""
    prefix = f"/run/{run}/files/figures/{stem}"
    for fmt in ("png", "svg", "html"):
        assert f'<a href="{prefix}.{fmt}">{fmt}</a>' in text, (stem, fmt)
    frame = f'<iframe class="figure" loading="lazy" src="{prefix}.html"'
    if iframe == "details":
        assert f'<img class="figure" src="{prefix}.png"' in text
        block = re.search(
            rf'<details class="interactive" data-figure="{stem}">(.*?)</details>', text
        )
        assert block is not None and frame in block[1]
    else:
        assert frame in text and f'<img class="figure" src="{prefix}.png"' not in text
    png = fetch(base, f"{prefix}.png")
    assert png.status == 200 and png.headers["content-type"] == "image/png"
    assert fetch(base, f"{prefix}.html").headers["content-type"].startswith("text/html")


# ---------------------------------------------------------------------------- viz


def test_viz_home_shows_the_site_parameters_and_both_figures(base: str, root: Path) -> None:
    text = get_ok(base, "/run/viz-x")
    assert h1(text) == "Feature visualisation of net._blocks.8"
    assert '<pre class="summary">3 channels of net._blocks.8, 16 steps at 48 px</pre>' in text
    shown = facts(text)
    assert shown["model"] == "tiny-net"
    assert shown["channels"] == "0, 1, 5 (3 channels)"
    assert shown["image size"] == "48 px"
    assert (shown["steps"], shown["kept steps"]) == ("16", "0, 4, 16")
    assert (shown["learning rate"], shown["seed"]) == ("0.05", "0")
    assert text.index("figures/grid.png") < text.index("figures/strip.png")
    assert_png_figure(base, text, "viz-x", "grid")
    assert_png_figure(base, text, "viz-x", "strip")
    href = "/run/viz-x/files/rendering.safetensors"
    assert f'<a href="{href}" download="">' in text
    assert fetch(base, href).body == (root / "viz-x" / "rendering.safetensors").read_bytes()
    assert 'href="/run/viz-x/record"' in text  # the run's record is one click away


def test_viz_shows_odd_config_values_as_written(base: str) -> None:
    """The page reads config.json as the run wrote it, checks nothing, and escapes every value."""
    text = get_ok(base, "/run/viz-odd")
    assert h1(text) == f"Feature visualisation of {XSS}"
    assert XSS not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    shown = facts(text)
    assert (shown["channels"], shown["steps"], shown["kept steps"]) == ("0-3", "many", "0, 4")


def test_viz_without_figures_says_so(base: str) -> None:
    text = get_ok(base, "/run/viz-no-figures")
    assert "No figure figures/grid.*" in text and "No figure figures/strip.*" in text
    assert "<iframe" not in text


# ---------------------------------------------------------------------------- weights-conv


def test_conv_home_explains_the_circuit_and_tables_the_top_channels(base: str) -> None:
    text = get_ok(base, "/run/wc-x")
    assert h1(text) == "Weights into net._blocks.12:5"
    said = text_of(text)
    assert (
        "The weights from each channel of net._blocks.11 into unit 5 of net._blocks.12, through "
        "the network between them with its activations linearised" in said
    )
    assert "Red excites, blue inhibits" in said
    assert "Above each map, the channel's visualisation" in said
    assert facts(text)["from"] == "net._blocks.11 (192 channels)"
    assert facts(text)["weight maps"] == "5×5 per channel"
    assert_png_figure(base, text, "wc-x", "circuit")
    tables = {}
    for kind in ("excitation", "inhibition"):
        found = re.search(rf'<table class="grid channels {kind}"(.*?)</table>', text, re.S)
        assert found is not None, kind
        tables[kind] = re.findall(
            rf'<tr data-channel="(\d+)" data-kind="{kind}">(.*?)</tr>', found[1]
        )
    assert [int(c) for c, _ in tables["excitation"]] == [139, 7]
    assert [int(c) for c, _ in tables["inhibition"]] == [97, 139]
    rows = {(kind, int(c)): [text_of(td) for td in re.findall(r"<td[^>]*>(.*?)</td>", r)]
            for kind in tables for c, r in tables[kind]}  # fmt: skip
    exc, inh = "excitation", "inhibition"
    assert rows[exc, 139] == ["1", "139", "+1.688", "−0.023", "(2, 2) · +0, +0 from centre"]
    assert rows[exc, 7] == ["2", "7", "+1.250", "−0.000", "(1, 4) · -1, +2 from centre"]
    assert rows[inh, 97] == ["1", "97", "+0.000", "−1.625", "(0, 2) · -2, +0 from centre"]
    assert rows[inh, 139] == ["2", "139", "+1.688", "−0.023", "(4, 4) · +2, +2 from centre"]
    assert 'data-value="1.6875"' in text
    assert text.index('id="excitation"') < text.index('id="inhibition"')


# ---------------------------------------------------------------------------- weights-lm


def test_lm_home_shows_copying_scores(base: str) -> None:
    text = get_ok(base, "/run/wl-x")
    assert h1(text) == "Weight circuits wl-x"
    assert "highest copying score: head L2H0 (0.938)" in text
    assert facts(text)["heads"] == "3 layers × 4 heads"
    assert facts(text)["studied"] == "head L1H2 · head L2H0 · neuron 1.7 · neuron 2.3"
    assert_png_figure(base, text, "wl-x", "copying")
    strongest = re.search(r"Strongest copying heads.*?</ul>", text, re.S)
    assert strongest is not None
    ranked = re.findall(r'data-layer="(\d+)" data-index="(\d+)" data-value="([^"]+)"', strongest[0])
    assert [(int(a), int(b), float(v)) for a, b, v in ranked][:4] == [
        (2, 0, 0.9375),
        (1, 0, 0.75),
        (0, 1, 0.5),
        (1, 1, 0.375),
    ]
    assert len(ranked) == 10
    assert text_of(strongest[0]).startswith("Strongest copying heads: L2H0 0.938 L1H0 0.750")


def test_lm_home_without_heads_says_so(base: str) -> None:
    text = get_ok(base, "/run/wl-no-heads")
    assert "No heads studied in this run." in text and 'class="unit head"' not in text
    assert 'id="neuron-1-7"' in text


def _section(text: str, anchor: str) -> str:
    found = re.search(
        rf'<section class="unit [a-z]+" id="{re.escape(anchor)}">(.*?)</section>', text, re.S
    )
    assert found is not None, anchor
    return found[1]


def test_lm_home_has_a_section_per_head_with_tokens_visible(base: str) -> None:
    text = get_ok(base, "/run/wl-x")
    head = _section(text, "head-1.2")
    assert text_of(head).startswith("Head L1H2 copying score 0.062")
    ov = re.search(r"<h4>OV circuit</h4>.*?<tbody>(.*?)</tbody>", head, re.S)
    assert ov is not None
    rows = re.findall(r"<tr>(.*?)</tr>", ov[1])
    assert len(rows) == 2
    # a leading space is shown as ␣, a newline as ↵, the XSS token as text; hover gives the repr
    source = '<code class="token" title="&#39; Paris&#39;"><span class="ws">␣</span>Paris</code>'
    assert rows[0].startswith(f"<td>{source}</td>")
    raised = re.findall(r'<li><code class="token" title="([^"]*)">(.*?)</code> '
                        r'<span class="score">([^<]*)</span></li>', rows[0])  # fmt: skip
    assert [(html.unescape(t), text_of(s), v) for t, s, v in raised] == [
        ("' Paris'", "␣Paris", "7.5"),
        ("'Paris'", "Paris", "6.25"),
        (repr(XSS), XSS, "1"),
    ]
    assert '<span class="ws">↵</span>' in rows[1] and '<span class="ws">⇥</span>' in rows[1]
    qk = re.search(r"<h4>QK circuit</h4>.*?<tbody>(.*?)</tbody>", head, re.S)
    assert qk is not None
    assert text_of(qk[1]) == "␣Paris ␣France 3.5 ␣␣ 1.25"
    comp = facts(head)
    q = "Q-composition: earlier heads whose output this head's queries read"
    assert comp[q] == "L0H1 0.25 L0H3 0.125"
    assert comp["K-composition: earlier heads whose output this head's keys read"] == "none"
    assert comp["V-composition: earlier heads whose output this head's values read"] == "L0H0 0.5"
    other = _section(text, "head-2.0")
    assert "copying score 0.938" in other and "&lt;b&gt;" in other


def test_lm_home_has_a_section_per_neuron(base: str) -> None:
    text = get_ok(base, "/run/wl-x")
    neuron = _section(text, "neuron-1-7")
    assert text_of(neuron).startswith("Neuron 1.7 read through gate")
    shown = facts(neuron)
    assert shown["exciting neurons"] == "L0 N5 +0.75 L0 N2 +0.5"
    assert shown["inhibiting neurons"] == "L0 N9 -0.625"
    assert shown["heads writing to it"] == "L0H1 1.5 L1H0 0.25"
    assert shown["read from the embedding"] == f"␣cat 2.5 {XSS} 1.5"
    assert shown["logits raised"] == "␣dog 3"
    assert shown["logits lowered"] == "↵ 1"
    other = facts(_section(text, "neuron-2-3"))
    assert other["exciting neurons"] == shown["exciting neurons"]
    assert other["heads writing to it"] == "L0H1 1.5 L1H0 0.25"


# ---------------------------------------------------------------------------- prompts


def _rows(text: str) -> list[tuple[str, str, str, str]]:
    return re.findall(
        r'<tr class="([^"]*)" data-site="([^"]+)" data-unit="(\d+)">(.*?)</tr>', text, re.S
    )


def _cells(row: str) -> dict[str, str]:
    """A row's cells by their last class (``num gcg-act`` → ``gcg-act``)."""
    return {
        cls.split()[-1]: cell
        for cls, cell in re.findall(r'<td class="([^"]+)"[^>]*>(.*?)</td>', row)
    }


def test_prompts_home_compares_each_unit_with_its_top_example(base: str) -> None:
    text = get_ok(base, "/run/pr-x")
    assert h1(text) == "Optimised prompts pr-x"
    assert '<pre class="summary">GCG beats the top dataset example on 2 of 3 units</pre>' in text
    assert facts(text)["GCG wins"] == "2 of 3"
    assert facts(text)["GCG options"] == "steps=8, length=2"
    assert_png_figure(base, text, "pr-x", "prompts", iframe="shown")
    thead = re.search(r'id="prompts"><thead>(.*?)</thead>', text)
    assert thead is not None
    head = re.findall(r"<th>(.*?)</th>", thead[1])
    assert [text_of(h) for h in head] == [
        "unit", "top dataset example", "top activation", "GCG prompt", "GCG activation",
        "NLL (nats/token)", "GCG / top", "soft activation", "soft → nearest tokens",
        "their activation",
    ]  # fmt: skip
    rows = _rows(text)
    assert [(site, int(unit)) for _, site, unit, _ in rows] == [
        ("blocks.3.mlp.post", 12),
        ("blocks.5.mlp.post", 3),
        ("blocks.5.mlp.post", 0),
    ]  # as given, not sorted
    assert [cls for cls, *_ in rows] == ["win", "", "win"]
    first = _cells(rows[0][3])
    assert text_of(first["unit"]) == "blocks.3.mlp.post:12"
    spans = re.findall(r'<span class="([^"]+)" title="([^"]*)">(.*?)</span>(?=<span class="tok|</div>)',
                       first["context"])  # fmt: skip
    assert [cls for cls, *_ in spans] == ["tok"] * 4 + ["tok max peak"]
    assert html.unescape(spans[-1][1]) == f"{XSS!r}  peak 4"
    assert spans[-1][2] == str(markupsafe.escape(XSS))
    assert spans[3][2] == '<span class="ws">↵</span>'
    assert text_of(first["top"]) == "4" and text_of(first["gcg-act"]) == "6"
    assert (
        first["gcg"]
        == '<div class="tokens" title="token ids: 5 6"> cat &lt;b&gt;sat&lt;/b&gt;</div>'
    )
    assert text_of(first["nll"]) == "3.250"
    assert text_of(first["ratio"]) == "×1.50 ★"
    assert text_of(first["soft-act"]) == "12.5" and text_of(first["soft-proj"]) == "2.5"
    assert '<span class="ws">↵</span>&amp;' in first["soft"]
    second = _cells(rows[1][3])
    assert text_of(second["ratio"]) == "×0.25"
    assert text_of(second["soft"]) == "—" and text_of(second["soft-proj"]) == "—"
    third = _cells(rows[2][3])
    assert text_of(third["ratio"]) == "— ★"  # a top example at 0: no ratio, but the prompt wins


def test_prompts_without_soft_prompts_have_no_soft_columns(base: str) -> None:
    text = get_ok(base, "/run/pr-no-soft")
    assert "soft activation" not in text and "soft → nearest tokens" not in text
    assert "GCG beats the top dataset example on 0 of 1 units" in text  # read from run.json's extra
    assert len(_rows(text)) == 1


# ---------------------------------------------------------------------------- errors, escaping


def test_broken_files_give_clear_error_pages(base: str) -> None:
    cases = {
        "/run/wc-bad": (
            400,
            "weights-conv run wc-bad: weights.safetensors is not a readable result file",
        ),
        "/run/wc-none": (
            404,
            "weights-conv run wc-none has no weights.safetensors: it did not finish",
        ),
        "/run/wc-odd": (
            400,
            "weights-conv run wc-odd: weights.safetensors: maps should be [c_in kh kw], "
            "got shape [192, 25]",
        ),
        "/run/wl-bad-heads": (
            400,
            "weights-lm run wl-bad-heads: heads.safetensors is not a readable result file",
        ),
        "/run/wl-no-copying": (404, "weights-lm run wl-no-copying has no copying.safetensors"),
        "/run/wl-odd-copying": (
            400,
            "weights-lm run wl-odd-copying: copying.safetensors: scores should be "
            "[layer head], got shape [12]",
        ),
        "/run/wl-odd-wiring": (
            400,
            "weights-lm run wl-odd-wiring: neurons/1-7/wiring.safetensors: neurons should be "
            "[layer neuron], got shape [16]",
        ),
        "/run/wl-no-wiring": (
            404,
            "weights-lm run wl-no-wiring has no neurons/2-3/wiring.safetensors",
        ),
        "/run/pr-bad": (
            400,
            "prompts run pr-bad: comparisons.safetensors is not a readable result",
        ),
        "/run/pr-none": (
            404,
            "prompts run pr-none has no comparisons.safetensors: it did not finish",
        ),
        "/run/pr-odd": (
            400,
            "prompts run pr-odd: comparisons.safetensors: prompt comparisons: the top context of "
            "unit 0 is not tokens",
        ),
    }
    assert_error_pages(base, cases)
    assert 'href="/run/wc-none/record"' in fetch(base, "/run/wc-none").text


def test_text_from_the_run_files_is_escaped(base: str) -> None:
    for run in ("wl-x", "pr-x"):
        text = get_ok(base, f"/run/{run}")
        assert XSS not in text and "<b>" not in text.split("</style>")[-1], run
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text, run


def test_the_pages_read_no_tensors() -> None:
    """The viewer reads JSON and figures only: these pages import neither torch nor safetensors."""
    for name in ("featureviz", "weights", "weights_lm", "prompts"):
        source = (PAGES / f"{name}.py").read_text()
        assert not re.search(r"^\s*(import|from)\s+(torch|safetensors)", source, re.M), name


def test_the_runs_are_listed_with_their_kinds(base: str) -> None:
    text = get_ok(base, "/")
    for run, kind in (("viz-x", "viz"), ("wc-x", "weights-conv"), ("wl-x", "weights-lm"),
                      ("pr-x", "prompts")):  # fmt: skip
        row = re.search(rf'<tr><td><a href="/run/{run}">{run}</a></td><td>([\w-]+)</td>', text)
        assert row is not None and row[1] == kind


# ---------------------------------------------------------------------------- Chromium


def test_the_pages_render_in_chromium(page: Any, base: str) -> None:
    from playwright.sync_api import expect

    pg, errors = page, page.errors
    for run in ("viz-x", "wc-x"):
        pg.goto(f"{base}/run/{run}")
        widths = pg.locator("img.figure").evaluate_all(
            "imgs => imgs.map(i => i.complete && i.naturalWidth)"
        )
        assert widths and all(w == 40 for w in widths), (run, widths)
    pg.locator("details.interactive summary").click()
    frame = pg.frame_locator("details.interactive iframe.figure")
    expect(frame.locator("#plot")).to_have_text("drawn by js")
    pg.goto(f"{base}/run/pr-x")
    pg.locator("iframe.figure").scroll_into_view_if_needed()
    expect(pg.frame_locator("iframe.figure").locator("#plot")).to_have_text("drawn by js")
    pg.goto(f"{base}/run/wl-x")
    expect(pg.locator("section.head")).to_have_count(2)
    expect(pg.locator("#head-1\\.2 code.token").first).to_have_text("␣Paris")
    pg.goto(f"{base}/run/pr-x")
    expect(pg.locator("table#prompts tbody tr")).to_have_count(3)
    peak = pg.locator("table#prompts .tok.peak").first
    expect(peak).to_have_text(XSS)
    assert "255, 110, 0" in peak.evaluate("t => getComputedStyle(t).backgroundColor")
    win = pg.locator("table#prompts tr.win td.ratio").first
    expect(win).to_have_css("font-weight", "700")
    assert errors == []
