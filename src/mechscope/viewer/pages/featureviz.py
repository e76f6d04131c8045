"""Pages for feature-visualisation runs (``mechscope.vision.runs.viz_run``): rendered channels.

A ``viz`` run's home names the site and the run's summary, lists the
rendering's parameters (config.json's values, as the run wrote them), then
shows the figure ``grid`` (the final image of each channel) and the figure
``strip`` (each channel at every kept step), each as its PNG with a link to
every format and its interactive HTML collapsed below, and links the
snapshots (``rendering.safetensors``, reopened by ``Rendering.load``). The
viewer reads only the config and the figures (never torch); every value is
escaped. The page is ``templates/featureviz/home.html``.

`interactive_figure`, `run_summary` and `tensors_link` are shared with
``pages/weights.py``, ``pages/weights_lm.py``, ``pages/maze.py`` and
``pages/prompts.py``.

Example: ``GET /run/<id>`` of a viz run renders `viz_home`.
"""

from __future__ import annotations

from typing import Any

from ..html import Markup, render, template
from ..registry import Document, Request, home
from ..runs import RunInfo
from .common import count, download, figure_html, file_url, summary_html

VIZ_KINDS = ("viz",)
UNITS_SHOWN = 64  # channels listed in the facts before "…"


# ---------------------------------------------------------------------------- shared pieces


def interactive_figure(run: RunInfo, stem: str, caption: str) -> Markup:
    """The figure ``figures/<stem>``: its PNG shown, its interactive HTML collapsed below.

    Example: ``interactive_figure(run, "grid", "final image of each channel")``.
    """
    shown = figure_html(run, stem, caption)
    if (run.path / "figures" / f"{stem}.html").is_file():
        shown += render(
            '<details class="interactive" data-figure="{stem}"><summary>interactive</summary>'
            '<iframe class="figure" loading="lazy" src="{src}" title="{t}"></iframe></details>',
            stem=stem,
            src=file_url(run, f"figures/{stem}.html"),
            t=caption,
        )
    return shown


def run_summary(run: RunInfo) -> Markup:
    """run.json's ``summary`` (also when nested under ``extra``), or nothing.

    Example: ``run_summary(run)`` → ``<pre class="summary">3 channels of …</pre>``.
    """
    if run.record.get("summary") is None:
        extra = run.record.get("extra")
        if isinstance(extra, dict) and extra.get("summary"):
            return render('<pre class="summary">{s}</pre>', s=extra["summary"])
    return summary_html(run)


def tensors_link(run: RunInfo, relative: str, what: str) -> Markup:
    """A download link for a saved tensor file with what it holds, or nothing if it is absent.

    Example: ``tensors_link(run, "rendering.safetensors", "Every snapshot")``.
    """
    if not (run.path / relative).is_file():
        return Markup("")
    return render("<p>{what}: {a}</p>", what=what, a=download(run, relative))


# ---------------------------------------------------------------------------- config values


def _given(value: Any, suffix: str = "") -> str:
    return "—" if value is None or value == "" else f"{value}{suffix}"


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def channels_text(units: Any) -> Markup | str:
    """config.json's ``units`` as shown: the first `UNITS_SHOWN` channels and their count
    (a value that is not a list of channels is shown as written).

    Example: ``channels_text([0, 1, 5])`` → ``0, 1, 5 <span class=muted>(3 channels)</span>``.
    """
    if not isinstance(units, list):
        return _given(units)
    shown = ", ".join(map(str, units[:UNITS_SHOWN]))
    more = f", … ({len(units)} in all)" if len(units) > UNITS_SHOWN else ""
    return render(
        "{units} <span class=muted>({n})</span>",
        units=shown + more,
        n=count(len(units), "channel"),
    )


def kept_steps(config: dict[str, Any]) -> str:
    """The steps whose snapshots the strip shows: the thresholds and the last step, in order.

    Example: ``kept_steps({"steps": 16, "thresholds": [0, 4]})`` → ``"0, 4, 16"``.
    """
    steps, thresholds = config.get("steps"), config.get("thresholds")
    kept = {t for t in thresholds if _whole(t)} if isinstance(thresholds, list) else set()
    if _whole(steps):
        kept = {t for t in {*kept, steps} if 0 <= t <= steps}
    return ", ".join(map(str, sorted(kept))) or "—"


# ---------------------------------------------------------------------------- page


@home(*VIZ_KINDS)
def viz_home(req: Request) -> Document:
    """The site and summary, the rendering's parameters, the grid and the strip."""
    run = req.the_run
    c = run.config
    site = _given(c.get("site"))
    kept = kept_steps(c)
    facts = {
        "model": run.model or "—",
        "site": site,
        "channels": channels_text(c.get("units")),
        "image size": _given(c.get("size"), " px"),
        "steps": _given(c.get("steps")),
        "kept steps": kept,
        "learning rate": _given(c.get("lr")),
        "seed": _given(c.get("seed")),
        "finished": run.finished or "—",
    }
    body = template(
        "featureviz/home.html",
        summary=run_summary(run),
        facts=facts,
        site=site,
        kept=kept,
        grid=interactive_figure(run, "grid", f"final image of each channel of {site}"),
        strip=interactive_figure(run, "strip", "each channel at each kept step"),
        tensors=tensors_link(
            run, "rendering.safetensors", "Every snapshot (Rendering.load reopens it)"
        ),
    )
    return Document(f"Feature visualisation of {site}", body)
