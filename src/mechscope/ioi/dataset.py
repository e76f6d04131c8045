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

import json
import os
import random
import re
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from ..core.model import Model
from ..errors import InputError, MechscopeError

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

POSITION_KEYS = ("IO", "S1", "S2", "END")
CORRUPTIONS: tuple[str, ...] = ("ABC", "S2_IO")
_SLOTS = {"IO", "S", "PLACE", "OBJECT"}
_FORMAT = "mechscope.ioi_dataset/1"


@dataclass(frozen=True, eq=False)
class IOIDataset:
    """IOI prompts of one token length, with the positions and token ids of their names.

    ``positions`` maps "IO", "S1", "S2", "END" to a [batch] tensor of token
    positions in ``tokens``. ``io_ids`` / ``s_ids`` are the tokens of the
    names standing at IO and S1 (in a clean prompt S1 and S2 hold the same
    name). ``fillers`` holds each prompt's words by slot (IO, S1, S2, PLACE,
    OBJECT) and ``name_ids`` the pool of single-token names, so that
    corruptions need no tokenizer. ``template_ids`` index ``templates``.
    """

    prompts: list[str]
    tokens: Int[Tensor, "batch pos"]
    io_ids: Int[Tensor, " batch"]
    s_ids: Int[Tensor, " batch"]
    positions: dict[str, Tensor]
    template_ids: Int[Tensor, " batch"]
    templates: tuple[str, ...]
    fillers: list[dict[str, str]]
    name_ids: dict[str, int]
    corruption: str | None = None
    seed: int = 0
    model_name: str | None = None

    def __post_init__(self) -> None:
        n = self.tokens.shape[0]
        if set(self.positions) != set(POSITION_KEYS):
            raise InputError(
                f"positions need the keys {POSITION_KEYS}, got {tuple(self.positions)}"
            )
        sizes = {len(self.prompts), len(self.fillers), *(len(v) for v in self.positions.values())}
        if sizes != {n}:
            raise InputError(f"an IOIDataset of {n} token rows has fields of lengths {sizes}")

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def orders(self) -> list[str]:
        """Per prompt, "ABBA" (IO named before S1) or "BABA" (S1 first)."""
        return ["ABBA" if io < s1 else "BABA" for io, s1 in zip(
            self.positions["IO"].tolist(), self.positions["S1"].tolist(), strict=True
        )]  # fmt: skip

    def __repr__(self) -> str:
        kind = f", corruption={self.corruption}" if self.corruption else ""
        used = len(set(self.template_ids.tolist()))
        example = self.prompts[0] if self.prompts else ""
        return (
            f"IOIDataset({len(self)} prompts × {self.tokens.shape[1]} tokens, {used} templates, "
            f"{len(self.name_ids)} names{kind}; e.g. {example!r})"
        )

    def corrupt(self, kind: str, seed: int | None = None) -> IOIDataset:
        """A corrupted twin with the same templates, places, objects and positions.

        ``"ABC"``: IO, S1 and S2 become three fresh names, all different (and
        different from the clean IO and S). ``"S2_IO"``: S2 becomes the IO
        name (ABB → ABA), so the correct answer flips to S. ``io_ids`` /
        ``s_ids`` of the twin are the names now at IO and S1; to score a
        corrupted run against the clean answer, pass the clean data set to
        `logit_diff`.
        """
        if kind not in CORRUPTIONS:
            raise InputError(f"unknown corruption {kind!r}; valid: {', '.join(CORRUPTIONS)}")
        rng = random.Random(self.seed + 1 if seed is None else seed)
        pool = list(self.name_ids)
        fillers: list[dict[str, str]] = []
        for f in self.fillers:
            new = dict(f)
            if kind == "S2_IO":
                new["S2"] = f["IO"]
            else:
                fresh = [p for p in pool if p not in (f["IO"], f["S1"], f["S2"])]
                if len(fresh) < 3:
                    raise InputError(
                        f"ABC needs 3 names besides IO and S, but the pool has {len(pool)}: "
                        "pass at least 5 single-token names"
                    )
                new["IO"], new["S1"], new["S2"] = rng.sample(fresh, 3)
            fillers.append(new)
        tokens = self.tokens.clone()
        rows = torch.arange(len(self))
        for key in ("IO", "S1", "S2"):
            ids = torch.tensor([self.name_ids[f[key]] for f in fillers], dtype=torch.long)
            tokens[rows, self.positions[key]] = ids.to(tokens.device)
        prompts = [
            _render(self.templates[t], f)
            for t, f in zip(self.template_ids.tolist(), fillers, strict=True)
        ]
        return replace(
            self,
            prompts=prompts,
            tokens=tokens,
            io_ids=tokens[rows, self.positions["IO"]],
            s_ids=tokens[rows, self.positions["S1"]],
            fillers=fillers,
            corruption=kind,
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Write the data set as one JSON file (atomically)."""
        path = Path(path)
        record = {
            "format": _FORMAT,
            "prompts": self.prompts,
            "tokens": self.tokens.tolist(),
            "io_ids": self.io_ids.tolist(),
            "s_ids": self.s_ids.tolist(),
            "positions": {k: v.tolist() for k, v in self.positions.items()},
            "template_ids": self.template_ids.tolist(),
            "templates": list(self.templates),
            "fillers": self.fillers,
            "name_ids": self.name_ids,
            "corruption": self.corruption,
            "seed": self.seed,
            "model_name": self.model_name,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".partial")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> IOIDataset:
        """Reopen a data set written by `save`."""
        path = Path(path)
        if not path.exists():
            raise MechscopeError(f"no IOI data set at {path}")
        record: dict[str, Any] = json.loads(path.read_text())
        if record.get("format") != _FORMAT:
            raise MechscopeError(f"{path} is not an IOI data set (format {record.get('format')!r})")

        def long(x: Any) -> Tensor:
            return torch.tensor(x, dtype=torch.long)

        return cls(
            prompts=list(record["prompts"]),
            tokens=long(record["tokens"]),
            io_ids=long(record["io_ids"]),
            s_ids=long(record["s_ids"]),
            positions={k: long(v) for k, v in record["positions"].items()},
            template_ids=long(record["template_ids"]),
            templates=tuple(record["templates"]),
            fillers=[dict(f) for f in record["fillers"]],
            name_ids={k: int(v) for k, v in record["name_ids"].items()},
            corruption=record["corruption"],
            seed=int(record["seed"]),
            model_name=record["model_name"],
        )


def single_tokens(model: Model, words: Sequence[str]) -> dict[str, int]:
    """The words that are one token with a leading space (" Mary"), with that token's id."""
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


def _render(template: str, fillers: dict[str, str]) -> str:
    """Fill a template; its first {S} takes fillers["S1"] and its second fillers["S2"]."""
    numbered = template.replace("{S}", "{S1}", 1).replace("{S}", "{S2}", 1)
    return numbered.format(**fillers)


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
