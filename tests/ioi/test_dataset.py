"""The IOI data set: positions, equal lengths, corruptions, the single-token filter, the metric."""

from __future__ import annotations

import pytest
import torch

from mechscope import InputError, Model
from mechscope.ioi import TEMPLATES, IOIDataset, ioi_dataset, logit_diff
from mechscope.testing import named_tiny_model

# Byte-level tiny tokenizers make every word several tokens; these become single tokens.
NAMES = ["Ann", "Bob", "Cat", "Dan", "Eve", "Fay", "Gus"]
PLACES = ["store", "park"]
OBJECTS = ["drink", "book"]


def named_tiny(arch: str = "llama") -> Model:
    """A tiny model whose tokenizer has " Ann", " store", … as single tokens."""
    return named_tiny_model(arch, [*NAMES, *PLACES, *OBJECTS])


@pytest.fixture(scope="module")
def model() -> Model:
    return named_tiny()


@pytest.fixture(scope="module")
def ds(model: Model) -> IOIDataset:
    return ioi_dataset(model, 24, seed=3, names=[*NAMES, "Zoe"], places=PLACES, objects=OBJECTS)


def test_positions_point_at_the_names(model: Model, ds: IOIDataset) -> None:
    rows = torch.arange(len(ds))
    pos = ds.positions
    assert torch.equal(ds.tokens[rows, pos["IO"]], ds.io_ids)
    assert torch.equal(ds.tokens[rows, pos["S1"]], ds.s_ids)
    assert torch.equal(ds.tokens[rows, pos["S2"]], ds.s_ids)
    assert (ds.io_ids != ds.s_ids).all()
    assert (pos["S1"] < pos["S2"]).all() and (pos["IO"] < pos["S2"]).all()
    assert (pos["END"] == ds.tokens.shape[1] - 1).all()
    for i, f in enumerate(ds.fillers):
        assert model.to_str_tokens(ds.tokens[i, pos["IO"][i]]) == [" " + f["IO"]]
        assert f["S1"] == f["S2"] and ds.prompts[i].count(f["S1"]) == 2


def test_prompts_tokenise_to_rows_of_one_length(model: Model, ds: IOIDataset) -> None:
    assert torch.equal(model.to_tokens(ds.prompts), ds.tokens)
    assert len({len(model.to_tokens(p)[0]) for p in ds.prompts}) == 1
    assert set(ds.orders) == {"ABBA", "BABA"}


def test_single_token_filter(ds: IOIDataset) -> None:
    assert set(ds.name_ids) == set(NAMES)  # "Zoe" is three tokens here
    names = {f[k] for f in ds.fillers for k in ("IO", "S1")}
    assert names <= set(NAMES)


def test_too_few_single_token_names_is_an_error(model: Model) -> None:
    with pytest.raises(InputError, match="single tokens"):
        ioi_dataset(model, 4)  # the default names are all multi-token bytes here
    with pytest.raises(InputError, match="at least 3"):
        ioi_dataset(model, 4, names=["Ann", "Bob", "Zoe"], places=PLACES, objects=OBJECTS)
    with pytest.raises(InputError, match="places"):
        ioi_dataset(model, 4, names=NAMES, places=["garden"], objects=OBJECTS)


def test_templates_are_checked(model: Model) -> None:
    with pytest.raises(InputError, match="two"):
        ioi_dataset(model, 2, templates=["When {IO} and {S} left, {IO} waved to"], names=NAMES)
    with pytest.raises(InputError, match="follow a space"):
        ioi_dataset(model, 2, templates=["{IO} and {S} left, {S} waved to"], names=NAMES)


def test_only_templates_of_the_modal_length_are_used(model: Model) -> None:
    short = "As {IO} and {S} left, {S} waved to"
    same = "So {IO} and {S} left, {S} waved to"
    longer = "When {IO} and {S} left the {PLACE}, {S} gave a {OBJECT} to"
    ds = ioi_dataset(model, 30, templates=[short, longer, same], names=NAMES, places=PLACES)
    assert set(ds.template_ids.tolist()) == {0, 2}
    assert ds.templates[0] == short


def test_default_templates_cover_both_orders() -> None:
    assert len(TEMPLATES) >= 15
    assert sum(t.index("{IO}") < t.index("{S}") for t in TEMPLATES) == len(TEMPLATES) // 2


def test_abc_replaces_all_three_names(model: Model, ds: IOIDataset) -> None:
    abc = ds.corrupt("ABC")
    rows = torch.arange(len(ds))
    assert all(torch.equal(abc.positions[k], ds.positions[k]) for k in ds.positions)
    names = torch.stack([abc.tokens[rows, ds.positions[k]] for k in ("IO", "S1", "S2")], 1)
    for i in range(len(ds)):
        fresh = set(names[i].tolist())
        assert len(fresh) == 3 and not fresh & {int(ds.io_ids[i]), int(ds.s_ids[i])}
    unchanged = torch.ones_like(ds.tokens, dtype=torch.bool)
    for k in ("IO", "S1", "S2"):
        unchanged[rows, ds.positions[k]] = False
    assert torch.equal(abc.tokens[unchanged], ds.tokens[unchanged])
    assert torch.equal(model.to_tokens(abc.prompts), abc.tokens)
    assert torch.equal(abc.io_ids, names[:, 0]) and abc.corruption == "ABC"
    assert torch.equal(ds.corrupt("ABC").tokens, abc.tokens)  # seeded


def test_s2_io_puts_the_io_name_at_s2(model: Model, ds: IOIDataset) -> None:
    flipped = ds.corrupt("S2_IO")
    rows = torch.arange(len(ds))
    assert torch.equal(flipped.tokens[rows, ds.positions["S2"]], ds.io_ids)
    expected = ds.tokens.clone()
    expected[rows, ds.positions["S2"]] = ds.io_ids
    assert torch.equal(flipped.tokens, expected)
    assert torch.equal(flipped.io_ids, ds.io_ids) and torch.equal(flipped.s_ids, ds.s_ids)
    assert torch.equal(model.to_tokens(flipped.prompts), flipped.tokens)
    with pytest.raises(InputError, match="valid: ABC, S2_IO"):
        ds.corrupt("IO_S1")


def test_logit_diff_reads_io_minus_s_at_end(ds: IOIDataset) -> None:
    n, width = ds.tokens.shape
    logits = torch.zeros(n, width, 300)
    rows = torch.arange(n)
    logits[rows, -1, ds.io_ids] = 2.0
    logits[rows, -1, ds.s_ids] = -1.0 - rows.float()
    logits[rows, 0, ds.io_ids] = 100.0  # not END: ignored
    per = logit_diff(logits, ds, per_prompt=True)
    assert torch.equal(per, 3.0 + rows.float())
    assert torch.isclose(logit_diff(logits, ds), per.mean())
    assert torch.equal(logit_diff(logits[:, -1], ds, per_prompt=True), per)
    with pytest.raises(InputError, match="rows"):
        logit_diff(logits[:2], ds)


def test_save_and_load_round_trip(tmp_path, ds: IOIDataset) -> None:
    abc = ds.corrupt("ABC")
    path = abc.save(tmp_path / "ioi")
    assert path.name == "ioi.safetensors"
    back = IOIDataset.load(path)
    assert back == abc and back.orders == abc.orders
    flat = IOIDataset.load(path, arrays="numpy")  # no torch: and yet corruptible again
    assert repr(flat) == repr(abc)
    assert torch.equal(flat.corrupt("S2_IO").tokens, abc.corrupt("S2_IO").tokens)
    assert back.prompts == abc.prompts and back.fillers == abc.fillers
    assert torch.equal(back.tokens, abc.tokens) and back.corruption == "ABC"
    assert all(torch.equal(back.positions[k], abc.positions[k]) for k in abc.positions)
    assert back.name_ids == abc.name_ids and back.templates == abc.templates


def test_repr_is_one_short_line(ds: IOIDataset) -> None:
    text = repr(ds)
    assert text.startswith("IOIDataset(24 prompts") and "\n" not in text


@pytest.mark.model
def test_smollm2_solves_ioi_and_s2_io_flips_it(smollm2) -> None:
    ds = ioi_dataset(smollm2, 100)
    assert ds.tokens.shape[0] == 100 and len(ds.name_ids) >= 100
    clean = logit_diff(smollm2.run(ds.tokens).logits, ds)
    flipped = logit_diff(smollm2.run(ds.corrupt("S2_IO").tokens).logits, ds)
    assert clean > 2.0
    assert flipped < 0.0
