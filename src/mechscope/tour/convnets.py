"""The tour's sections on convolutional networks: feature visualisation and weight circuits, the maze agent.

Feature visualisation runs on EfficientNet-Lite0, then reads OV/QK and
virtual weights and searches prompts on the language model; the maze agent
is a small convolutional policy, trained, evaluated and steered.

Example::

    from rich.console import Console
    from mechscope.tour.convnets import maze_agent
    maze_agent(mechscope.load(), Console())   # train the policy, watch it misgeneralise, steer it
"""

from __future__ import annotations

import time

from rich.console import Console

from .. import Model
from ..display import lm_weights, maze_behaviour, maze_steering
from .settings import (
    OUT_DIR,
    TOUR_LM_WEIGHTS,
    TOUR_MAZE_EVAL,
    TOUR_MAZE_STEER,
    TOUR_MAZE_STEPS,
    TOUR_PROMPT_STEPS,
    TOUR_PROMPT_UNITS,
    TOUR_VIZ_BLOCKS,
    TOUR_VIZ_STEPS,
    TOUR_WEIGHTS,
)


def feature_visualisation(model: Model, console: Console) -> None:
    """Channel visualisations early → late and a 0/4/48/2048 strip on EfficientNet-Lite0, a weight
    circuit with its channels drawn beside it; OV/QK and virtual weights, and GCG prompts, on the LM.

    Example: ``feature_visualisation(mechscope.load(), Console())``, one step of `run_tour`.
    """
    from ..harvest import open_harvest
    from ..prompts import prompts_run, sample_units
    from ..vision import load_vision
    from ..vision.runs import viz_run
    from ..weights import conv_weights_run, lm_weights_run

    vision = load_vision("efficientnet-lite0")
    sites = [f"net._blocks.{b}" for b in TOUR_VIZ_BLOCKS]
    t0 = time.perf_counter()
    viz_run(vision, sites, [0, 1, 2, 3], OUT_DIR / "viz-layers", size=96, steps=TOUR_VIZ_STEPS,
            thresholds=(), progress=False)  # fmt: skip
    console.print(f"{vision.name}: channels 0–3 of blocks {', '.join(map(str, TOUR_VIZ_BLOCKS))} "
                  f"({TOUR_VIZ_STEPS} steps, 96 px) in {time.perf_counter() - t0:.0f} s: "
                  f"{OUT_DIR / 'viz-layers' / 'figures' / 'grid.png'}")  # fmt: skip
    t0 = time.perf_counter()
    (strip,) = viz_run(vision, "net._blocks.12", [5], OUT_DIR / "viz-strip", size=128, steps=2048,
                       thresholds=(0, 4, 48), progress=False)  # fmt: skip
    console.print(f"the 0/4/48/2048 strip of net._blocks.12 channel 5 in {time.perf_counter() - t0:.0f} s: "
                  f"objective {-strip.losses[0]:.2f} → {-strip.losses[-1]:.2f}; "
                  f"{OUT_DIR / 'viz-strip' / 'figures' / 'strip.png'}")  # fmt: skip
    src, dst, unit = TOUR_WEIGHTS
    weights = conv_weights_run(vision, src, dst, unit, OUT_DIR / "weights-conv", viz_steps=TOUR_VIZ_STEPS,
                               progress=False)  # fmt: skip
    console.print(weights.render(4))
    console.print(f"the circuit figure: {OUT_DIR / 'weights-conv' / 'figures' / 'circuit.png'}")
    heads, neurons = TOUR_LM_WEIGHTS["heads"], TOUR_LM_WEIGHTS["neurons"]
    summary = lm_weights_run(model, OUT_DIR / "weights-lm", heads=heads, neurons=neurons)
    console.print(lm_weights(summary, OUT_DIR / "weights-lm", neurons, 5))
    store = open_harvest(OUT_DIR / "harvest")
    units = (
        sample_units(store, [f"blocks.{model.dims.n_layers // 3}.mlp.post"], TOUR_PROMPT_UNITS)
        if model.dims
        else []
    )
    rows = prompts_run(model, units, store, OUT_DIR / "prompts", start="top", length=10,
                       steps=TOUR_PROMPT_STEPS, soft_steps=50, progress=False)  # fmt: skip
    console.print(rows)  # a PromptComparisons prints its table
    console.print(f"pages: [bold]mechscope serve {OUT_DIR}[/bold]")


def maze_agent(model: Model, console: Console) -> None:
    """Shard theory's maze agent: train, watch it misgeneralise, steer and retarget it.

    Example: ``maze_agent(mechscope.load(), Console())``, one step of `run_tour`.
    """
    import json

    from ..maze import BehaviourReport, eval_run, steer_run, train_run

    train = OUT_DIR / "maze-train"
    train_run(train, steps=TOUR_MAZE_STEPS, progress=False)
    console.print(json.loads((train / "run.json").read_text())["summary"], highlight=False)
    eval_run(train, OUT_DIR / "maze-eval", n=TOUR_MAZE_EVAL, progress=False)
    console.print(
        maze_behaviour(BehaviourReport.load(OUT_DIR / "maze-eval" / "report.safetensors"))
    )
    console.print(
        maze_steering(steer_run(train, OUT_DIR / "maze-steer", n=TOUR_MAZE_STEER, progress=False))
    )
    console.print(f"vector fields before and after: [bold]mechscope serve {OUT_DIR}[/bold]")
