"""The batched forms of interventions (paired index tensors, masks) as data, with one copy per site."""

from __future__ import annotations

import pytest
import torch

import mechscope as ms
from mechscope.core.execution import Step, apply_intervention
from mechscope.errors import InterventionError

AXES = ("batch", "pos", "head", "d_head")


def _ids(n: int = 6, pos: int = 7) -> torch.Tensor:
    g = torch.Generator().manual_seed(2)
    return torch.randint(3, 259, (n, pos), generator=g)


def test_paired_points_equal_one_intervention_per_row(tiny) -> None:
    ids = _ids()
    source = tiny.run(ids.flip(0), save=["blocks.1.resid_pre", "blocks.0.attn.z"]).cache
    rows, positions, heads = torch.tensor([0, 2, 3, 5]), torch.tensor([1, 6, 0, 3]), [0, 3, 1, 2]
    take = torch.tensor([5, 0, 4, 1])
    one_by_one = [
        ms.patch("blocks.1.resid_pre", source["blocks.1.resid_pre"][t : t + 1], rows=[r], positions=[p])
        for r, p, t in zip(rows.tolist(), positions.tolist(), take.tolist(), strict=True)
    ] + [
        ms.patch("blocks.0.attn.z", source["blocks.0.attn.z"][t : t + 1], rows=[r], positions=[p], heads=[h])
        for r, p, h, t in zip(rows.tolist(), positions.tolist(), heads, take.tolist(), strict=True)
    ]  # fmt: skip
    paired = [
        ms.patch("blocks.1.resid_pre", source, rows=rows, positions=positions,
                 source_rows=take, paired=True),
        ms.patch("blocks.0.attn.z", source, rows=rows, positions=positions, heads=heads,
                 source_rows=take, paired=True),
    ]  # fmt: skip
    a = tiny.run(ids, interventions=one_by_one).logits
    b = tiny.run(ids, interventions=paired).logits
    assert torch.equal(a, b)
    assert not torch.equal(b, tiny.run(ids).logits)
    assert "paired" in repr(paired[0]) and "source_rows" in repr(paired[0])


def test_mask_equals_where(llama) -> None:
    ids = _ids()
    value = torch.randn(1, 7, 32, generator=torch.Generator().manual_seed(3))
    mask = torch.zeros(6, 7, 1, dtype=torch.bool)
    mask[1, 2] = mask[4, 0] = True
    out = llama.run(ids, interventions=[ms.replace("blocks.1.resid_pre", value, mask=mask)])
    ref = llama.run(
        ids,
        interventions=[ms.apply("blocks.1.resid_pre", lambda x: torch.where(mask, value, x))],
    )
    assert torch.equal(out.logits, ref.logits)
    added = llama.run(ids, interventions=[ms.add("blocks.1.resid_pre", value, mask=mask)])
    ref_add = llama.run(
        ids,
        interventions=[ms.apply("blocks.1.resid_pre", lambda x: torch.where(mask, x + value, x))],
    )
    assert torch.equal(added.logits, ref_add.logits)


def test_a_site_is_copied_once() -> None:
    """After the first change a site's tensor is the session's own: later ones write in place."""
    x = torch.randn(4, 5, 3, 2)
    first = apply_intervention(ms.zero_ablate("s", rows=[0]), x, AXES, Step())
    assert first is not x and torch.equal(x[1:], first[1:])
    again = apply_intervention(
        ms.zero_ablate("s", rows=[2], heads=[1]), first, AXES, Step(), owned=True
    )
    assert again is first and (first[2, :, 1] == 0).all()
    untouched = x.clone()
    apply_intervention(ms.zero_ablate("s", rows=[3]), x, AXES, Step())
    assert torch.equal(x, untouched)  # not owned: never written


def test_many_interventions_at_one_site_equal_their_sequence(llama) -> None:
    ids = _ids()
    ivs = [ms.scale("blocks.0.mlp.post", 0.5 + r, rows=[r], neurons=[r, r + 1]) for r in range(6)]
    ivs.insert(3, ms.save("blocks.0.mlp.post"))  # a save between: the cache keeps that moment
    out = llama.run(ids, interventions=ivs)
    saved = out.cache["blocks.0.mlp.post"]
    plain = llama.run(ids, save=["blocks.0.mlp.post"]).cache["blocks.0.mlp.post"]
    assert torch.equal(saved[3:], plain[3:])  # rows 3… were changed only after the save
    assert torch.equal(saved[0, :, 0], plain[0, :, 0] * 0.5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mask": torch.ones(2)}, "boolean tensor"),
        ({"mask": torch.ones(2, dtype=torch.bool), "rows": [0]}, "selects by itself"),
        ({"paired": True}, "needs index selectors"),
        ({"source_rows": [0]}, "needs paired=True"),
    ],
)
def test_batched_forms_check_their_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(InterventionError, match=message):
        ms.replace("blocks.0.resid_pre", torch.zeros(1), **kwargs)


def test_paired_lengths_must_agree(llama) -> None:
    ids = _ids()
    bad = ms.zero_ablate("blocks.0.resid_pre", rows=[0, 1, 2], positions=[1, 2], paired=True)
    with pytest.raises(InterventionError, match="one length"):
        llama.run(ids, interventions=[bad])
    wrong = ms.replace(
        "blocks.0.resid_pre", torch.zeros(5), mask=torch.ones(6, 3, 1, dtype=torch.bool)
    )
    with pytest.raises(InterventionError, match="does not broadcast"):
        llama.run(ids, interventions=[wrong])
