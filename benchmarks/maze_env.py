"""The batched maze world against one maze at a time: shortest-path maps and policy rollouts.

Two jobs, each done both ways in the same run on the same mazes:

- distance maps to the cheese for every square (what imitation training and
  the decision squares need): `Mazes.distances` over the whole batch against
  a breadth-first search per maze in plain Python (collections.deque);
- rollouts of the policy: every maze stepping together (one forward per step
  for the batch) against one maze at a time (one forward per step per maze),
  the way an unvectorised environment runs.

Both ways give identical distance maps and identical paths under greedy
actions (checked). The last lines print the speed-ups.
"""

from __future__ import annotations

import argparse
import time
from collections import deque

import torch

from mechscope.maze import MazePolicy, generate, rollout
from mechscope.maze.env import GRID, MOVES, UNREACHABLE


def bfs(open_: torch.Tensor, target: tuple[int, int]) -> torch.Tensor:
    """Distances from every square to `target` by breadth-first search (one maze)."""
    grid = open_.tolist()
    dist = [[UNREACHABLE] * GRID for _ in range(GRID)]
    dist[target[0]][target[1]] = 0
    queue = deque([target])
    while queue:
        r, c = queue.popleft()
        for dr, dc in MOVES.tolist():
            y, x = r + dr, c + dc
            if 0 <= y < GRID and 0 <= x < GRID and grid[y][x] and dist[y][x] == UNREACHABLE:
                dist[y][x] = dist[r][c] + 1
                queue.append((y, x))
    return torch.tensor(dist)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mazes", type=int, default=1000)
    parser.add_argument("--rollout-mazes", type=int, default=64)
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    torch.manual_seed(0)
    mazes = generate(args.mazes, seed=0, region=None)

    t0 = time.perf_counter()
    batched = mazes.distances(mazes.cheese)
    t_batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    one_by_one = torch.stack(
        [bfs(mazes.open[i], tuple(mazes.cheese[i].tolist())) for i in range(len(mazes))]
    )
    t_loop = time.perf_counter() - t0
    assert torch.equal(batched, one_by_one), "distance maps differ"
    print(
        f"distance maps, {args.mazes} mazes: batched {t_batched:.3f} s, per maze (BFS) {t_loop:.3f} s"
    )

    policy = MazePolicy().eval()
    few = mazes[: args.rollout_mazes]
    t0 = time.perf_counter()
    together = rollout(few, policy, steps=args.steps, greedy=True)
    t_together = time.perf_counter() - t0
    t0 = time.perf_counter()
    single = [rollout(few[i], policy, steps=args.steps, greedy=True)[0] for i in range(len(few))]
    t_single = time.perf_counter() - t0
    # a mouse on its cheese stays there: the batched path goes on repeating that square
    same = all(torch.equal(together[i, : len(p)], p) and (together[i, len(p) :] == p[-1]).all()
               for i, p in enumerate(single))  # fmt: skip
    assert same, "paths differ"
    print(f"rollouts, {len(few)} mazes × {args.steps} steps: batched {t_together:.3f} s, "
          f"one maze at a time {t_single:.3f} s")  # fmt: skip
    print(
        f"speed-up: distance maps {t_loop / t_batched:.1f}×, rollouts {t_single / t_together:.1f}×"
    )


if __name__ == "__main__":
    main()
