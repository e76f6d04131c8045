"""Training the maze policy by imitation of shortest paths (behaviour cloning), on the CPU.

Each batch draws training mazes (cheese in the top-right region), puts the
mouse on a random open square and asks for the first step of the shortest
path to the cheese. The policy never sees cheese outside the region, so
"go to the top-right" is as good a rule as "go to the cheese" on almost every
training square: the seed of its misgeneralisation. A few thousand steps
(minutes on two cores) reach the cheese in over 95% of training mazes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import replace

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..core.placement import parse_device
from ..errors import InputError
from .env import Mazes, best_actions, generate, on_shortest_path, random_squares, rollout
from .policy import MazePolicy, PolicyConfig
from .reports import TrainingCurve


def reach_rate(
    policy: Callable[[Tensor], Tensor], mazes: Mazes, *, seed: int = 0, steps: int = 250
) -> float:
    """Fraction of `mazes` whose cheese the mouse reaches from the start (sampled actions).

    `policy` is a `MazePolicy` or any function from observations to action logits.

    Example: ``reach_rate(policy, generate(200, seed=5))`` → a fraction in [0, 1].
    """
    path = rollout(mazes, policy, steps=steps, seed=seed)
    return float((path[:, -1] == mazes.cheese).all(1).float().mean())


def train_policy(
    *,
    steps: int = 6000,
    batch: int = 256,
    lr: float = 2e-3,
    region: int = 5,
    n_mazes: int = 20_000,
    on_path: float = 0.5,
    seed: int = 0,
    config: PolicyConfig | None = None,
    eval_every: int = 500,
    n_eval: int = 200,
    progress: bool = True,
    on_eval: Callable[[int, MazePolicy], None] | None = None,
    device: str | torch.device = "cpu",
) -> tuple[MazePolicy, TrainingCurve]:
    """Train a policy on `n_mazes` training mazes (cheese in the top-right `region`).

    Every `eval_every` steps it is rolled out in `n_eval` held-out training
    mazes (reach rate in the curve) and `on_eval(step, policy)` is called (to
    checkpoint). The net trains on `device`; the mazes stay on the CPU.
    Example: ``policy, curve = train_policy(steps=2000)``.
    """
    if steps < 1 or batch < 1 or n_mazes < 1:
        raise InputError("steps, batch and n_mazes must be positive")
    torch.manual_seed(seed)
    mazes = generate(n_mazes, seed=seed, region=region)
    held_out = generate(n_eval, seed=seed + 10_000, region=region)
    to_cheese = mazes.distances(mazes.cheese)  # [maze grid grid]
    targets = best_actions(to_cheese)
    # the mouse may stand anywhere open but on the cheese
    where = mazes.open.clone()
    where[torch.arange(len(mazes)), mazes.cheese[:, 0], mazes.cheese[:, 1]] = False
    # ... and, for a share `on_path` of each batch, on the path from the start to the cheese
    # (the squares an agent rolling out from the start visits most)
    path = where & on_shortest_path(mazes.distances(mazes.start), to_cheese, mazes.cheese)
    policy = MazePolicy(config).to(parse_device(device))
    opt = torch.optim.AdamW(policy.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 200) * 0.5 * (1 + math.cos(math.pi * s / steps))
    )
    g = torch.Generator().manual_seed(seed)
    curve = TrainingCurve([], [], [], [], [])  # filled in place, then given its time
    t0 = time.perf_counter()
    bar = tqdm(range(steps), desc="maze policy", disable=not progress)
    run_loss, run_acc = 0.0, 0.0
    for step in bar:
        policy.train()
        idx = torch.randint(len(mazes), (batch,), generator=g)
        sub = mazes[idx]
        on = torch.rand(batch, generator=g) < on_path
        mouse = random_squares(torch.where(on[:, None, None], path[idx], where[idx]), g)
        labels = targets[idx, mouse[:, 0], mouse[:, 1]]
        logits = policy(sub.observe(mouse))
        loss = torch.nn.functional.cross_entropy(logits, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        run_loss += float(loss.detach())
        run_acc += float((logits.argmax(-1) == labels).float().mean())
        if (step + 1) % 50 == 0:
            curve.step.append(step + 1)
            curve.loss.append(run_loss / 50)
            curve.accuracy.append(run_acc / 50)
            bar.set_postfix(loss=f"{run_loss / 50:.3f}", acc=f"{run_acc / 50:.3f}")
            run_loss, run_acc = 0.0, 0.0
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            policy.eval()
            curve.eval_step.append(step + 1)
            curve.reach.append(reach_rate(policy, held_out, seed=step))
            if on_eval is not None:
                on_eval(step + 1, policy)
    return policy.eval(), replace(curve, seconds=round(time.perf_counter() - t0, 1))
