"""The IOI data set (indirect object identification, Wang et al. 2022) and its metric.

A prompt such as "When Mary and John went to the store together, John gave a
drink to" names the indirect object (IO, Mary) once and the subject (S, John)
twice (S1, S2); the model should continue with " Mary". `ioi_dataset` fills
our own templates (both orders: ABBA, IO first, and BABA, S first) with first
names, places and objects that are single tokens under the model's tokenizer,
and keeps only templates of one token length so that every prompt ends at the
same position. Each prompt records where IO, S1, S2 and its last token (END)
are, so metrics and patching can index them. `IOIDataset.corrupt` builds the
standard corrupted twins ("ABC": three fresh names; "S2_IO": the second S
replaced by the IO), and `logit_diff` is the task metric,
logit(IO) − logit(S) at END.

Example::

    ds = ioi_dataset(model, 100)
    logit_diff(model.run(ds.tokens).logits, ds)                # ≈ +3.5 on SmolLM2
    logit_diff(model.run(ds.corrupt("S2_IO").tokens).logits, ds)  # < 0
"""

from __future__ import annotations

import random
import re
import string
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from ..core.model import Model
from ..errors import InputError, MechscopeError
from .results import CORRUPTIONS as CORRUPTIONS
from .results import POSITION_KEYS, IOIDataset
from .results import render as _render

# Common English first names, female and male; the tokenizer decides which survive.
NAMES: tuple[str, ...] = (
    "Mary", "John", "Alice", "Bob", "James", "Sarah", "Michael", "Emma", "David", "Laura",
    "Daniel", "Anna", "Thomas", "Lisa", "Paul", "Kate", "Mark", "Rachel", "Peter", "Jessica",
    "Andrew", "Emily", "Steven", "Hannah", "Brian", "Grace", "Kevin", "Sophie", "Jason", "Olivia",
    "Ryan", "Chloe", "Eric", "Megan", "Adam", "Amy", "Scott", "Julia", "Jeff", "Helen",
    "Tim", "Rose", "Luke", "Claire", "Sam", "Lucy", "Matt", "Jane", "Chris", "Ruth",
    "Dan", "Anne", "Tom", "Karen", "Joe", "Susan", "Jack", "Nancy", "Henry", "Linda",
    "George", "Betty", "Edward", "Diana", "Frank", "Alex", "Charles", "Victoria", "Richard", "Amanda",
    "Robert", "Nicole", "William", "Heather", "Joseph", "Maria", "Tony", "Ellen", "Kyle", "Jennifer",
    "Ben", "Ashley", "Carl", "Melissa", "Greg", "Stephanie", "Harry", "Kelly", "Fred", "Amber",
    "Gary", "Rebecca", "Jerry", "Monica", "Larry", "Patricia", "Oliver", "Catherine", "Max", "Natalie",
    "Simon", "Elizabeth", "Martin", "Sandra", "Ian", "Teresa", "Jim", "Donna", "Roger", "Joan",
    "Philip", "Sharon", "Arthur", "Carol", "Leo", "Martha", "Jacob", "Jenny", "Bill", "Molly",
)  # fmt: skip

PLACES: tuple[str, ...] = (
    "store", "park", "school", "garden", "beach", "office", "library", "hospital", "station",
    "market", "restaurant", "church", "museum", "airport", "kitchen", "house", "river", "farm",
    "mall", "bank", "gym", "theater", "zoo", "cafe",
)  # fmt: skip

# Objects start with a consonant so that "a {OBJECT}" reads right.
OBJECTS: tuple[str, ...] = (
    "drink", "book", "ring", "bag", "key", "ball", "gift", "letter", "card", "basket", "bottle",
    "pen", "phone", "hat", "cake", "shirt", "coin", "flower", "toy", "box", "camera", "snack",
    "map", "ticket", "watch",
)  # fmt: skip

# Written in ABBA order (IO first); `TEMPLATES` adds the BABA twin of each. Under
# SmolLM2's tokenizer all of them are 15 tokens long with single-token fillers.
BASE_TEMPLATES: tuple[str, ...] = (
    "When {IO} and {S} went to the {PLACE} together, {S} gave a {OBJECT} to",
    "After {IO} and {S} finally arrived at the {PLACE}, {S} handed a {OBJECT} to",
    "While {IO} and {S} were waiting at the {PLACE}, {S} passed a {OBJECT} to",
    "Once {IO} and {S} got back from the {PLACE}, {S} threw a {OBJECT} to",
    "Since {IO} and {S} were both at the {PLACE}, {S} sent a {OBJECT} to",
    "Then, {IO} and {S} went to the {PLACE}. {S} gave a {OBJECT} to",
    "Last week {IO} and {S} met at the {PLACE}. {S} showed a {OBJECT} to",
    "Later, {IO} and {S} walked to the {PLACE}. {S} sold a {OBJECT} to",
    "As {IO} and {S} were leaving the {PLACE}, {S} tossed a {OBJECT} back to",
    "Then, {IO} and {S} had a long argument, and afterwards {S} said to",
)
TEMPLATES: tuple[str, ...] = tuple(
    t for base in BASE_TEMPLATES for t in (base, base.replace("{IO} and {S}", "{S} and {IO}", 1))
)

_SLOTS = {"IO", "S", "PLACE", "OBJECT"}


def single_tokens(model: Model, words: Sequence[str]) -> dict[str, int]:
    """The words that are one token with a leading space (" Mary"), with that token's id.

    Example: ``single_tokens(model, ["Mary", "John"])`` → ``{"Mary": 5099, "John": 2322}``
    on SmolLM2.
    """
    out: dict[str, int] = {}
    for w in dict.fromkeys(words):
        try:
            out[w] = model.to_single_token(" " + w)
        except InputError:
            continue
    return out


def _check_template(template: str) -> None:
    fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    counts = Counter(fields)
    wrong = set(counts) - _SLOTS
    if wrong or counts["IO"] != 1 or counts["S"] != 2:
        raise InputError(
            f"an IOI template needs one {{IO}}, two {{S}} and optionally {{PLACE}} and "
            f"{{OBJECT}}, got {dict(counts)} in {template!r}"
        )
    if re.search(r"(^|[^ ])\{(IO|S|PLACE|OBJECT)\}", template):
        raise InputError(
            f"each slot must follow a space (names are tokens with a leading space): {template!r}"
        )


def _locate(tokens: list[int], io_id: int, s1_id: int, s2_id: int) -> dict[str, int] | None:
    """Positions of IO, S1, S2 and END, or None if the names are not where expected."""
    io = [i for i, t in enumerate(tokens) if t == io_id]
    s = [i for i, t in enumerate(tokens) if t in (s1_id, s2_id)]
    if len(io) != 1 or len(s) != 2 or tokens[s[0]] != s1_id or tokens[s[1]] != s2_id:
        return None
    return {"IO": io[0], "S1": s[0], "S2": s[1], "END": len(tokens) - 1}


def ioi_dataset(
    model: Model,
    n: int,
    seed: int = 0,
    templates: Sequence[str] | None = None,
    *,
    names: Sequence[str] | None = None,
    places: Sequence[str] | None = None,
    objects: Sequence[str] | None = None,
) -> IOIDataset:
    """`n` IOI prompts of one token length, names drawn at random (seeded).

    Names, places and objects are kept only if they are single tokens with a
    leading space under ``model.tokenizer`` (override the lists with
    `names`, `places`, `objects`). Templates use the slots {IO}, {S} (twice),
    {PLACE}, {OBJECT}; only those of the most common token length are used
    (ties: the shorter length). Tokens follow the model's default BOS rule.

    Example::

        ds = ioi_dataset(model, 100, seed=0)
        ds.tokens.shape, ds.positions["S2"][:3]
    """
    if n < 1:
        raise InputError(f"n must be at least 1, got {n}")
    templates = tuple(TEMPLATES if templates is None else templates)
    if not templates:
        raise InputError("templates is empty")
    for t in templates:
        _check_template(t)
    name_ids = single_tokens(model, NAMES if names is None else names)
    candidates = len(set(NAMES if names is None else names))
    if len(name_ids) < 3:
        raise InputError(
            f"only {len(name_ids)} of {candidates} names are single tokens with a leading space "
            f"under this tokenizer; at least 3 are needed (pass names=[...])"
        )
    place_list = list(single_tokens(model, PLACES if places is None else places))
    object_list = list(single_tokens(model, OBJECTS if objects is None else objects))
    for what, kept in (("places", place_list), ("objects", object_list)):
        if not kept:
            raise InputError(
                f"none of the {what} is a single token with a leading space under this "
                f"tokenizer (pass {what}=[...])"
            )
    pool = list(name_ids)

    def tokenize(template: str, fill: dict[str, str]) -> list[int]:
        return model.to_tokens(_render(template, fill))[0].tolist()

    # a template's length does not depend on which single-token fillers it gets
    probe = {"IO": pool[0], "S1": pool[1], "S2": pool[1], "PLACE": place_list[0]}
    probe["OBJECT"] = object_list[0]
    lengths = [len(tokenize(t, probe)) for t in templates]
    counts = Counter(lengths)
    length = min(counts, key=lambda k: (-counts[k], k))
    kept = [i for i, size in enumerate(lengths) if size == length]

    rng = random.Random(seed)
    rows: list[tuple[list[int], dict[str, int], int, dict[str, str]]] = []
    attempts = 0
    while len(rows) < n:
        attempts += 1
        if attempts > 20 * n + 100:
            raise MechscopeError(
                "could not build IOI prompts whose names land on single tokens at fixed "
                f"positions (kept {len(rows)} of {n}); check the templates and names"
            )
        t = rng.choice(kept)
        io, s = rng.sample(pool, 2)
        fill = {"IO": io, "S1": s, "S2": s}
        fill["PLACE"] = rng.choice(place_list)
        fill["OBJECT"] = rng.choice(object_list)
        ids = tokenize(templates[t], fill)
        where = _locate(ids, name_ids[io], name_ids[s], name_ids[s])
        if len(ids) != length or where is None:
            continue
        rows.append((ids, where, t, fill))

    def long(x: Any) -> Tensor:
        return torch.tensor(x, dtype=torch.long)

    tokens = long([r[0] for r in rows])
    return IOIDataset(
        prompts=[_render(templates[r[2]], r[3]) for r in rows],
        tokens=tokens,
        io_ids=long([name_ids[r[3]["IO"]] for r in rows]),
        s_ids=long([name_ids[r[3]["S1"]] for r in rows]),
        positions={k: long([r[1][k] for r in rows]) for k in POSITION_KEYS},
        template_ids=long([r[2] for r in rows]),
        templates=templates,
        fillers=[r[3] for r in rows],
        name_ids=name_ids,
        seed=seed,
        model_name=model.name,
    )


def logit_diff(
    logits: Float[Tensor, "batch pos d_vocab"] | Float[Tensor, "batch d_vocab"],
    ds: IOIDataset,
    per_prompt: bool = False,
) -> Float[Tensor, ""] | Float[Tensor, " batch"]:
    """logit(IO) − logit(S) at each prompt's END, averaged unless `per_prompt`.

    `logits` is a run's full output [batch, pos, d_vocab] or the END rows
    [batch, d_vocab].

    Example::

        logit_diff(model.run(ds.tokens).logits, ds)   # a scalar tensor
    """
    if logits.shape[0] != len(ds):
        raise InputError(f"logits have {logits.shape[0]} rows but the data set {len(ds)} prompts")
    rows = torch.arange(len(ds), device=logits.device)
    if logits.ndim == 3:
        logits = logits[rows, ds.positions["END"].to(logits.device)]
    io = logits[rows, ds.io_ids.to(logits.device)]
    s = logits[rows, ds.s_ids.to(logits.device)]
    diff = (io - s).float()
    return diff if per_prompt else diff.mean()
