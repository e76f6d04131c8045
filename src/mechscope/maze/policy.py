"""The maze policy: an IMPALA-style residual convnet (Espeholt et al. 2018), small enough for a CPU.

Three blocks, each a 3×3 convolution, an optional 3×3 max-pool of stride 2
and two residual units ``x + conv(relu(conv(relu(x))))``, then a dense layer
and the action logits. Module paths are its sites, named as in Turner, Mini
et al.: ``block2.res1`` is the residual stream after block 2's first unit
(their ``block2.res1.resadd_out``), [batch 32 8 8] on the 15 × 15 grid.
Block 2 does not pool, so its 8 × 8 map keeps one cell per maze cell (maze
cells sit on even squares, the pooling windows are centred on them).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from jaxtyping import Float
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from ..core.placement import parse_device
from ..errors import InputError
from .env import ACTIONS, CHANNELS, GRID


@dataclass(frozen=True)
class PolicyConfig:
    """Shape of the policy; saved beside its weights.

    Example: ``MazePolicy(PolicyConfig(channels=(8, 16, 16), hidden=64))``.
    """

    channels: tuple[int, ...] = (16, 32, 32)
    pool: tuple[bool, ...] = (True, False, True)
    hidden: int = 256
    grid: int = GRID


class Residual(nn.Module):
    """x + conv1(relu(conv0(relu(x)))): its output is the residual stream ("resadd_out").

    Example: ``Residual(32)(torch.rand(1, 32, 8, 8))`` → [1 32 8 8].
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Float[Tensor, "batch c h w"]) -> Float[Tensor, "batch c h w"]:
        return x + self.conv1(torch.relu(self.conv0(torch.relu(x))))


class Block(nn.Module):
    """conv → (max-pool) → two residual units.

    Example: ``Block(3, 16, pool=True)(torch.rand(1, 3, 15, 15))`` → [1 16 8 8].
    """

    def __init__(self, c_in: int, c_out: int, pool: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.pool = nn.MaxPool2d(3, 2, padding=1) if pool else nn.Identity()
        self.res1 = Residual(c_out)
        self.res2 = Residual(c_out)

    def forward(self, x: Float[Tensor, "batch c h w"]) -> Float[Tensor, "batch c2 h2 w2"]:
        return self.res2(self.res1(self.pool(self.conv(x))))


class MazePolicy(nn.Module):
    """Observation [batch 3 grid grid] → action logits [batch 4] (up, down, left, right).

    Example::

        policy, mazes = MazePolicy(), generate(4)
        policy(mazes.observe(mazes.start))        # [4 4] logits: up, down, left, right
    """

    def __init__(self, config: PolicyConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or PolicyConfig()
        if len(config.channels) != 3 or len(config.pool) != 3:
            raise InputError("the maze policy has three blocks: give three channels and pools")
        c_in, side = len(CHANNELS), config.grid
        for i, (c, pool) in enumerate(zip(config.channels, config.pool, strict=True), start=1):
            self.add_module(f"block{i}", Block(c_in, c, pool))
            c_in, side = c, (side + 1) // 2 if pool else side
        self.fc = nn.Linear(c_in * side * side, config.hidden)
        self.fc_policy = nn.Linear(config.hidden, len(ACTIONS))

    def forward(self, obs: Float[Tensor, "batch 3 grid grid"]) -> Float[Tensor, "batch 4"]:
        """Logits on the observation's device (the mazes stay where they are; the net may not)."""
        weight = self.fc.weight
        x = self.block3(self.block2(self.block1(obs.to(weight.device, weight.dtype))))
        x = torch.relu(self.fc(torch.relu(x).flatten(1)))
        return self.fc_policy(x).to(obs.device)

    def save(self, path: str | Path, meta: dict[str, object] | None = None) -> Path:
        """Weights as safetensors, the config (and `meta`) in its metadata."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".partial")
        info = {
            "config": json.dumps(asdict(self.config)),
            **{k: json.dumps(v) for k, v in (meta or {}).items()},
        }
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()},
            str(tmp),
            metadata=info,
        )
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> MazePolicy:
        """A policy saved by `save` (or `mechscope maze train`), on `device`."""
        from safetensors import safe_open

        path = Path(path)
        if path.is_dir():
            path = path / "policy.safetensors"
        if not path.exists():
            raise InputError(f"no maze policy at {path} (train one with `mechscope maze train`)")
        try:
            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
        except Exception as e:
            raise InputError(f"{path} is not a safetensors file: {e}") from None
        if "config" not in meta:
            raise InputError(
                f"{path} holds no maze-policy config; was it written by MazePolicy.save?"
            )
        raw = json.loads(meta["config"])
        config = PolicyConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})
        policy = cls(config)
        policy.load_state_dict(load_file(str(path)))
        return policy.to(parse_device(device)).eval()
