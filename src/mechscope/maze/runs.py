"""Run folders for the maze agent (``maze-train``, ``maze-eval``, ``maze-steer``), which the viewer serves.

- ``maze-train``: ``policy.safetensors`` (`MazePolicy.load`), checkpoints
  ``checkpoints/step-N.safetensors``, ``curve.safetensors`` (`TrainingCurve`) and the figures
  ``curve`` (loss, action accuracy), ``reach`` (held-out cheese reached),
  ``mazes.png`` and ``rollouts.gif``.
- ``maze-eval``: ``report.safetensors`` (`BehaviourReport`: reach in training and
  deployment mazes, rates binned by the cheese's distance to the corner and to
  the decision square), ``behaviour.safetensors`` (per maze, `Behaviour.load`), the figures
  ``by_corner_distance``, ``by_decision_distance``, ``fields`` (vector fields)
  and ``rollouts.gif``.
- ``maze-steer``: ``steer.safetensors`` (`SteerReport`: the cheese vector's effect at decision
  squares per coefficient, its control, the cheese channels and the
  retargeting sweep and result), ``effect.safetensors`` (P(toward cheese)
  per maze before, after, control), ``channels.safetensors`` and
  ``retarget.safetensors`` (`CheeseChannels.load`, `Retargeting.load`) and the figures
  ``cheese_vector``, ``fields_cheese_vector``, ``channels``,
  ``fields_retarget``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch

from ..core.model import Model
from ..core.placement import parse_device
from ..errors import InputError
from ..figures import grouped_bars, line
from ..store import model_record, new_run
from .behaviour import Behaviour, behaviour, decision_squares, vector_field
from .env import Mazes, generate, rollout
from .figures import save_render, save_rollout_gif, vector_fields
from .policy import MazePolicy
from .reports import (
    BehaviourReport,
    Calibration,
    RetargetSummary,
    SteerReport,
    SweepPoint,
)
from .steer import (
    SITE,
    cheese_blind,
    cheese_channels,
    cheese_vectors,
    control_vectors,
    decision_effects,
    plain,
    retarget,
    retarget_edit,
    steered,
)
from .train import reach_rate, train_policy

RETARGET_SITE = "block1.res2"


def policy_model(policy: MazePolicy | str | Path, device: str | torch.device = "cpu") -> Model:
    """A maze policy (or the folder/file it was saved in) as a mechscope `Model` on `device`.

    Example::

        model = policy_model("runs/maze-train")
        model.run(mazes.observe(mazes.start), save=["block2.res1"]).cache["block2.res1"]
    """
    source = None
    if not isinstance(policy, MazePolicy):
        source = str(policy)
        policy = MazePolicy.load(policy, device)
    return Model(policy.to(parse_device(device)), name="maze-policy", source=source)


def train_run(
    out: str | Path, *, steps: int = 6000, batch: int = 256, region: int = 5, n_mazes: int = 20_000,
    seed: int = 0, eval_every: int = 500, n_eval: int = 500, progress: bool = True,
    device: str | torch.device = "cpu",
) -> MazePolicy:  # fmt: skip
    """Train a maze policy by imitation into the run folder `out` (see the module docstring).

    Example: ``policy = train_run("runs/maze-train", steps=2000)``.
    """
    config = {"steps": steps, "batch": batch, "region": region, "n_mazes": n_mazes, "seed": seed,
              "eval_every": eval_every, "n_eval": n_eval, "method": "imitation of shortest paths"}  # fmt: skip
    with new_run("maze-train", out, config) as run:
        t0 = time.perf_counter()

        def checkpoint(step: int, policy: MazePolicy) -> None:
            policy.save(run.dir / "checkpoints" / f"step-{step}.safetensors", {"step": step})

        policy, curve = train_policy(steps=steps, batch=batch, region=region, n_mazes=n_mazes,
                                     seed=seed, eval_every=eval_every, n_eval=min(n_eval, 200), progress=progress,
                                     on_eval=checkpoint, device=device)  # fmt: skip
        run.timed("train", t0)
        held_out = generate(n_eval, seed=seed + 20_000, region=region)
        reach = reach_rate(policy, held_out, seed=seed)
        policy.save(run.dir / "policy.safetensors", {"steps": steps, "reach": reach})
        curve = replace(curve, final_reach=reach, n_eval=n_eval)
        curve.save(run.dir / "curve")  # TrainingCurve.load reopens it
        line({"loss": curve.loss, "action accuracy": curve.accuracy}, run.figures / "curve",
             title="maze policy: imitation loss and accuracy", x_labels=[str(s) for s in curve.step],
             x_title="step", y_title="")  # fmt: skip
        line({"cheese reached (held-out training mazes)": curve.reach}, run.figures / "reach",
             title="maze policy: cheese reached while training", x_labels=[str(s) for s in curve.eval_step],
             x_title="step", y_title="fraction of mazes")  # fmt: skip
        save_render(held_out, run.figures / "mazes")
        save_rollout_gif(
            held_out, rollout(held_out[:4], policy, seed=seed), run.figures / "rollouts"
        )
        run.extra["summary"] = (
            f"reaches the cheese in {reach:.1%} of {n_eval} held-out training mazes "
            f"(cheese in the top-right {region}×{region}); {steps} steps in {curve.seconds:.0f} s"
        )
        run.extra["reach"] = reach
        run.finish()
    return policy


def _example_mazes(mazes: Mazes, b: Behaviour) -> list[int]:
    """One maze the mouse solves with the cheese near the corner, one far, one it fails."""
    has = ~b.p_cheese.isnan()
    picks = []
    for cond in (has & b.reached_cheese & (b.cheese_to_corner < 4),
                 has & b.reached_cheese & (b.cheese_to_corner >= 9), has & ~b.reached_cheese):  # fmt: skip
        idx = cond.nonzero()[:, 0]
        if len(idx):
            picks.append(int(idx[0]))
    return picks


def eval_run(
    policy: MazePolicy | str | Path, out: str | Path, *, n: int = 1000, seed: int = 1, region: int = 5,
    steps: int = 250, progress: bool = True, device: str | torch.device = "cpu",
) -> Behaviour:  # fmt: skip
    """Behaviour in `n` training-distribution and `n` deployment mazes into the run folder `out`.

    Example: ``eval_run("runs/maze-train", "runs/maze-eval", n=500).reached_cheese.float().mean()``.
    """
    if n < 10:
        raise InputError(f"evaluate on at least 10 mazes, got {n}")
    model = policy_model(policy, device)
    config = {"model": model_record(model), "policy": model.source, "n": n, "seed": seed,
              "region": region, "steps": steps}  # fmt: skip
    with new_run("maze-eval", out, config) as run:
        t0 = time.perf_counter()
        train_mazes = generate(n, seed=seed, region=region)
        deploy = generate(n, seed=seed + 1, region=None)
        train_reach = reach_rate(plain(model), train_mazes, seed=seed, steps=steps)
        b = behaviour(plain(model), deploy, steps=steps, seed=seed, progress=progress)
        run.timed("rollouts", t0)
        report = BehaviourReport.of(b, n, train_reach)
        report.save(run.dir / "report")  # BehaviourReport.load reopens it
        b.save(run.dir / "behaviour.safetensors")  # Behaviour.load reopens it
        for feature, rows, what in (
            ("by_corner_distance", report.by_corner_distance, "cheese's distance to the top-right corner"),
            ("by_decision_distance", report.by_decision_distance, "cheese's distance to the decision square"),
        ):  # fmt: skip
            labels = [f"{r.lo:g}–{r.hi:g} ({r.mazes})" for r in rows]
            line({"cheese reached": [r.cheese for r in rows],
                  "P(toward cheese) at decision square": [r.p_cheese for r in rows],
                  "P(toward corner) at decision square": [r.p_corner for r in rows],
                  "corner before cheese": [r.corner for r in rows]},
                 run.figures / feature, title=f"deployment mazes by the {what}", x_labels=labels,
                 x_title="Euclidean distance in squares (mazes)", y_title="fraction")  # fmt: skip
        picks = _example_mazes(deploy, b)
        fields = [vector_field(plain(model), deploy[i]) for i in picks]
        dec = decision_squares(deploy)
        titles = [f"maze {i}: cheese {b.cheese_to_corner[i]:.1f} from corner, "
                  f"P(cheese)={b.p_cheese[i]:.2f}" for i in picks]  # fmt: skip
        marks = [
            {"decision": tuple(dec[i].tolist()), "corner": tuple(deploy.corner[i].tolist())}
            for i in picks
        ]
        vector_fields(fields, titles, run.figures / "fields", title="action probabilities in deployment mazes",
                      marks=marks)  # type: ignore[arg-type]  # fmt: skip
        save_rollout_gif(deploy[picks], rollout(deploy[picks], plain(model), seed=seed),
                         run.figures / "rollouts")  # fmt: skip
        run.extra["summary"] = report.summary()
        run.finish()
    return b


def steer_run(
    policy: MazePolicy | str | Path, out: str | Path, *, n: int = 200, site: str = SITE,
    coeffs: Sequence[float] = (0.0, -0.5, -1.0, -2.0), retarget_site: str = RETARGET_SITE,
    channel_counts: Sequence[int] = (4, 6, 8), strengths: Sequence[float] = (1.0, 2.0, 3.0),
    seed: int = 2, progress: bool = True, device: str | torch.device = "cpu",
) -> SteerReport:  # fmt: skip
    """The cheese vector (with its control) at `n` decision squares, cheese channels and retargeting.

    The retargeting edit (how many channels, how strong) is chosen on 60
    calibration mazes, then measured on `n` fresh cheese-free mazes.

    Example: ``steer_run("runs/maze-train", "runs/maze-steer", n=100).p_cheese_after``.
    """
    if n < 10:
        raise InputError(f"steer over at least 10 mazes, got {n}")
    for name, values in (("coeffs", coeffs), ("channel_counts", channel_counts),
                         ("strengths", strengths)):  # fmt: skip
        if not values:
            raise InputError(f"{name} needs at least one value")
    model = policy_model(policy, device)
    for s in (site, retarget_site):
        model.table[s]  # an unknown site fails here, naming the closest ones
    probe = generate(1, seed=seed, region=None)
    width = (
        model.run(probe.observe(probe.start), save=[retarget_site]).cache[retarget_site].shape[1]
    )
    if not all(1 <= c <= width for c in channel_counts):
        raise InputError(
            f"channel_counts must be 1 to {width} (the channels of {retarget_site}), "
            f"got {list(channel_counts)}"
        )
    config = {"model": model_record(model), "policy": model.source, "n": n, "site": site,
              "coeffs": list(coeffs), "retarget_site": retarget_site, "channel_counts": list(channel_counts),
              "strengths": list(strengths), "seed": seed}  # fmt: skip
    from tqdm.auto import tqdm

    with new_run("maze-steer", out, config) as run:
        bar = tqdm(total=4, desc="maze steer", disable=not progress)
        t0 = time.perf_counter()
        pool = generate(4 * n, seed=seed, region=None)
        dec = decision_squares(pool)
        mazes = pool[(dec[:, 0] >= 0).nonzero()[:n, 0]]
        if len(mazes) < n:
            raise InputError(
                f"only {len(mazes)} of {4 * n} mazes have a decision square; ask for fewer"
            )
        vectors = cheese_vectors(model, mazes, site)
        controls = control_vectors(model, mazes, vectors, site, seed=seed)
        effects = dict(zip(coeffs, zip(decision_effects(model, mazes, vectors, coeffs, site),
                                         decision_effects(model, mazes, controls, coeffs, site),
                                         strict=True), strict=True))  # fmt: skip
        sweep = [SweepPoint(float(c), float(e.after.mean()), float(k.after.mean()))
                 for c, (e, k) in effects.items()]  # fmt: skip
        main = -1.0 if -1.0 in effects else coeffs[-1]
        e, k = effects[main]
        run.timed("cheese vector", t0)
        bar.update()
        run.save_tensors(
            "effect.safetensors", {"before": e.before, "after": e.after, "control": k.after}
        )
        labels = [f"{c:g}" for c in coeffs]
        line({"cheese vector": [r.cheese_vector for r in sweep], "control (two cheese-free mazes)":
              [r.control for r in sweep]}, run.figures / "cheese_vector",
             title=f"P(toward cheese) at {n} decision squares, vector added at {site}",
             x_labels=labels, x_title="coefficient", y_title="mean P(toward cheese)")  # fmt: skip
        # vector fields: original, cheese vector subtracted, control subtracted, in the maze
        # where the cheese vector moves P(toward cheese) most
        i = int((e.before - e.after).argmax())
        shown = mazes[i]
        fields = [vector_field(plain(model), shown),
                  vector_field(steered(model, site, vectors[i : i + 1], main), shown),
                  vector_field(steered(model, site, controls[i : i + 1], main), shown)]  # fmt: skip
        mark = [{"decision": tuple(decision_squares(shown)[0].tolist())}] * 3
        titles = [f"original: P(toward cheese) {e.before[i]:.2f}",
                  f"cheese vector × {main:g}: {e.after[i]:.2f}", f"control × {main:g}: {k.after[i]:.2f}"]  # fmt: skip
        vector_fields(fields, titles,
                      run.figures / "fields_cheese_vector", title=f"the cheese vector at {site} (maze {i})",
                      marks=mark)  # type: ignore[arg-type]  # fmt: skip
        bar.update()
        # cheese channels and retargeting
        t1 = time.perf_counter()
        found = cheese_channels(model, generate(2000, seed=seed + 1, region=None), retarget_site)
        order = found.top(len(found.correlation))  # by |r|
        grouped_bars({"correlation with the cheese's cell": [float(found.correlation[i]) for i in order]},
                     [str(i) for i in order], run.figures / "channels",
                     title=f"channels of {retarget_site} tracking the cheese", y_title="Pearson r")  # fmt: skip
        calibration = generate(60, seed=seed + 2, region=None)
        table: list[Calibration] = []
        for count in channel_counts:
            for strength in strengths:
                r = retarget(
                    model, calibration, found, found.top(count), strength=strength, seed=seed
                )
                table.append(Calibration(count, float(strength), r.rate, r.rate_plain))
        best = max(table, key=lambda row: (row.reached, -row.channels))
        bar.update()
        trial = generate(n, seed=seed + 3, region=None)
        result = retarget(
            model, trial, found, found.top(best.channels), strength=best.strength, seed=seed
        )
        run.timed("retarget", t1)
        found.save(run.dir / "channels.safetensors")  # CheeseChannels.load
        result.save(run.dir / "retarget.safetensors")  # Retargeting.load
        picks = found.top(best.channels)
        one = trial[:1].without_cheese()
        edit = retarget_edit(found, picks, result.target[:1], best.strength)
        fields = [vector_field(cheese_blind(model), one),
                  vector_field(cheese_blind(model, retarget_site, edit), one)]  # fmt: skip
        target = tuple(result.target[0].tolist())
        vector_fields(fields, ["no cheese", f"channels {picks} edited"], run.figures / "fields_retarget",
                      title=f"retargeting at {retarget_site}", marks=[{"target": target}] * 2)  # type: ignore[arg-type]  # fmt: skip
        bar.update()
        bar.close()
        report = SteerReport(
            site, n, float(main), float(e.before.mean()), float(e.after.mean()), float(k.after.mean()),
            float((e.after < e.before).float().mean()), float(vectors.flatten(1).norm(dim=1).mean()),
            sweep, order, [float(found.correlation[i]) for i in order],
            RetargetSummary(retarget_site, picks, best.strength, n, result.rate, result.rate_plain,
                            result.rate_cheese, table),
        )  # fmt: skip
        report.save(run.dir / "steer")  # SteerReport.load reopens it
        run.extra["summary"] = report.summary()
        run.finish()
    return report
