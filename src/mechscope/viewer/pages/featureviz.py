"""Pages for feature-visualisation runs (``mechscope.vision.runs.viz_run``): rendered channels.

A ``viz`` run's home names the site and the run's summary, lists the
rendering's parameters (from ``config.json``), then shows the figure ``grid``
(the final image of each channel) and the figure ``strip`` (each channel at
every kept step), each as its PNG with a link to every format and its
interactive HTML collapsed below, and links the snapshots
(``rendering.safetensors``, reopened by ``Rendering.load``). The viewer reads
only the config and the figures (never torch); every value is escaped, and a
config that is not a visualisation's gives an error page naming it.
`interactive_figure` is shared with ``pages/weights.py`` and
``pages/prompts.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...errors import InputError
from ..html import Markup, definition_list, render
from ..registry import Document, Request, home
from ..runs import RunInfo
from .common import count, download, figure_html, file_url, summary_html

VIZ_KINDS = ("viz",)
UNITS_SHOWN = 64  # channels listed in the facts before "…"


# ---------------------------------------------------------------------------- shared pieces


def interactive_figure(run: RunInfo, stem: str, caption: str) -> Markup:
    """The figure ``figures/<stem>``: its PNG shown, its interactive HTML collapsed below."""
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
    """run.json's ``summary`` (also when nested under ``extra``), or nothing."""
    if run.record.get("summary") is None:
        extra = run.record.get("extra")
        if isinstance(extra, dict) and extra.get("summary"):
            return render('<pre class="summary">{s}</pre>', s=extra["summary"])
    return summary_html(run)


def tensors_link(run: RunInfo, relative: str, what: str) -> Markup:
    """A download link for a saved tensor file with what it holds, or nothing if it is absent."""
    if not (run.path / relative).is_file():
        return Markup("")
    return render("<p>{what}: {a}</p>", what=what, a=download(run, relative))


# ---------------------------------------------------------------------------- data


@dataclass(frozen=True)
class VizConfig:
    """What the viz page shows of ``config.json`` (written by `viz_run`)."""

    site: str
    units: list[int]
    size: Any
    steps: int | None
    thresholds: list[int]
    lr: Any
    seed: Any

    @property
    def kept(self) -> list[int]:
        """The steps whose snapshots the strip shows (the thresholds and the last step)."""
        if self.steps is None:
            return sorted(set(self.thresholds))
        return sorted(t for t in {*self.thresholds, self.steps} if 0 <= t <= self.steps)


def read_viz_config(run: RunInfo) -> VizConfig:
    """``config.json`` of a viz run, checked for what the page shows."""
    c = run.config
    try:
        site = c["site"]
        if not isinstance(site, str) or not site:
            raise ValueError(f"site should be a site name, got {site!r}")
        units = c["units"]
        if not isinstance(units, list) or not all(
            isinstance(u, int) and not isinstance(u, bool) for u in units
        ):
            raise ValueError(f"units should be a list of channels, got {units!r}")
        steps = c.get("steps")
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int)):
            raise ValueError(f"steps should be a whole number, got {steps!r}")
        thresholds = c.get("thresholds") or []
        if not isinstance(thresholds, list):
            raise ValueError(f"thresholds should be a list of steps, got {thresholds!r}")
        return VizConfig(
            site,
            units,
            c.get("size"),
            steps,
            [int(t) for t in thresholds],
            c.get("lr"),
            c.get("seed"),
        )
    except (KeyError, TypeError, ValueError) as err:
        what = f"no {err}" if isinstance(err, KeyError) else str(err)
        raise InputError(
            f"config.json of viz run {run.id} is not a feature visualisation's: {what}"
        ) from err


def _units_text(units: list[int]) -> str:
    shown = ", ".join(map(str, units[:UNITS_SHOWN]))
    return shown + (f", … ({len(units)} in all)" if len(units) > UNITS_SHOWN else "")


def _given(value: Any, suffix: str = "") -> str:
    return "—" if value is None else f"{value}{suffix}"


# ---------------------------------------------------------------------------- page


@home(*VIZ_KINDS)
def viz_home(req: Request) -> Document:
    """The site and summary, the rendering's parameters, the grid and the strip."""
    run = req.the_run
    cfg = read_viz_config(run)
    facts = definition_list(
        {
            "model": run.model or "—",
            "site": cfg.site,
            "channels": render(
                "{units} <span class=muted>({n})</span>",
                units=_units_text(cfg.units),
                n=count(len(cfg.units), "channel"),
            ),
            "image size": _given(cfg.size, " px"),
            "steps": _given(cfg.steps),
            "kept steps": ", ".join(map(str, cfg.kept)) or "—",
            "learning rate": _given(cfg.lr),
            "seed": _given(cfg.seed),
            "finished": run.finished or "—",
        }
    )
    body = render(
        "{summary}{facts}<p>Each image is optimised (from a random Fourier-parametrised start, "
        "with jitter, scaling and rotation at every step) to maximise one channel's mean "
        "activation at <code>{site}</code>.</p>"
        "<h2>Final images</h2>{grid}<h2>Steps</h2>"
        "<p>Each channel at every kept step ({kept}); step 0 is the starting image.</p>{strip}"
        "{tensors}",
        summary=run_summary(run),
        facts=facts,
        site=cfg.site,
        grid=interactive_figure(run, "grid", f"final image of each channel of {cfg.site}"),
        kept=", ".join(map(str, cfg.kept)) or "—",
        strip=interactive_figure(run, "strip", "each channel at each kept step"),
        tensors=tensors_link(
            run, "rendering.safetensors", "Every snapshot (Rendering.load reopens it)"
        ),
    )
    return Document(f"Feature visualisation of {cfg.site}", body)
