"""The result of a feature visualisation: the optimised images at each kept step, without torch.

`Rendering` (``images[step]``: a batch [batch 3 h w] of images in [0, 1], the
objective's name and the loss at every step) is a frozen `Result`: one
safetensors file (``rendering.safetensors`` in a viz run), reopened with
torch tensors or, with ``arrays="numpy"``, without torch.

Example::

    r = Rendering.load("runs/viz/rendering.safetensors")
    r.final.shape                  # torch.Size([4, 3, 128, 128])
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..results import Result, result

if TYPE_CHECKING:
    from jaxtyping import Float
    from torch import Tensor


@result
class Rendering(Result):
    """Snapshots of the optimised images: ``images[step]`` is [batch 3 h w] in [0, 1].

    `losses` holds minus the objective (summed over the batch) at every step.
    Example: ``render(model, channel("net._blocks.9", 3)).final`` → the last images.
    """

    format = "mechscope.rendering/1"

    images: dict[int, Float[Tensor, "batch 3 h w"]]
    objective: str
    losses: list[float]

    @property
    def final(self) -> Any:
        """The images at the last kept step, [batch 3 h w]."""
        return self.images[max(self.images)]

    def strip(self, path: str | Path, labels: Sequence[str] | None = None) -> dict[str, Path]:
        """One row per image, one column per kept step (the 0 / 4 / 48 / 2048 strip)."""
        import torch

        from ..image_figures import image_grid

        steps = sorted(self.images)
        grid = torch.stack([torch.as_tensor(self.images[s]) for s in steps], dim=1)
        return image_grid(grid, path, title=self.objective, row_labels=labels,
                          col_labels=[f"step {s}" for s in steps])  # fmt: skip

    def summary(self) -> str:
        steps = sorted(self.images)
        shape = "×".join(map(str, self.final.shape[1:])) if steps else "none"
        losses = (
            f"; loss {self.losses[0]:.4g} → {self.losses[-1]:.4g} over {len(self.losses)} steps"
            if self.losses
            else ""
        )
        kept = ", ".join(map(str, steps)) or "none"
        batch = len(self.final) if steps else 0
        return f"{self.objective}: {batch} images of {shape}, kept at steps {kept}{losses}"
