"""Contrast pairs (Burns et al. 2022): one statement, answered "Yes" and "No".

A `ContrastPair` holds a question whose truth is known (`label`) and the two
completions x+ (the question answered with the positive answer) and x− (the
negative one). `geography_pairs` builds true and false statements from the
GeoNames facts of `mechscope.tracing.facts` (a false one swaps in another
subject's object), balanced and shuffled; `load_pairs` reads the user's
JSON. `pair_texts` formats both sides, through the model's chat template
when it has one.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from ..core.model import Model
from ..errors import InputError
from ..store import read_json_list

# how a statement becomes a yes/no question; {} is the statement
QUESTION = "Is the following statement true or false?\n{}\nAnswer Yes or No."


@dataclass(frozen=True)
class ContrastPair:
    """A statement with a known truth value, to be answered `positive` and `negative`."""

    statement: str
    label: bool  # True: the statement is true
    positive: str = "Yes"
    negative: str = "No"
    relation: str = "custom"

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def geography_pairs(
    relations: Sequence[str] = ("country_capital", "city_country", "country_continent"),
    *,
    limit: int | None = None,
    known_by: Model | None = None,
    seed: int = 0,
) -> list[ContrastPair]:
    """True and false statements from GeoNames facts, half of each, shuffled with `seed`.

    Each fact gives one true statement ("The capital of France is the city
    of Paris.") and one false one, its object replaced by another fact's
    object of the same relation. With `known_by`, only facts that model
    completes correctly are used (a model cannot know the truth of a fact
    it does not know).
    """
    from ..tracing.facts import geography_facts, known_facts

    rng = random.Random(seed)
    pairs: list[ContrastPair] = []
    for relation in relations:
        facts = geography_facts(relation)
        if known_by is not None:
            facts = [k.fact for k in known_facts(known_by, facts)]
        objects = sorted({f.object for f in geography_facts(relation)})
        if len(objects) < 2:
            raise InputError(f"relation {relation!r} has fewer than two distinct objects")
        for fact in facts:
            wrong = rng.choice([o for o in objects if o != fact.object])
            pairs.append(ContrastPair(f"{fact.prompt} {fact.object}.", True, relation=relation))
            pairs.append(ContrastPair(f"{fact.prompt} {wrong}.", False, relation=relation))
    rng.shuffle(pairs)
    return pairs[:limit] if limit is not None else pairs


def load_pairs(path: str | Path) -> list[ContrastPair]:
    """Pairs from JSON: a list of {"statement", "label" (true/false), "positive"?, "negative"?}."""
    rows = read_json_list(path, "contrast-pair", "pairs", non_empty=True)
    pairs = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or "statement" not in row or "label" not in row:
            raise InputError(f"pair {i} of {path} needs a statement and a label (true or false)")
        if not isinstance(row["label"], bool):
            raise InputError(f"pair {i} of {path}: the label must be true or false")
        pairs.append(
            ContrastPair(
                str(row["statement"]),
                row["label"],
                str(row.get("positive", "Yes")),
                str(row.get("negative", "No")),
                str(row.get("relation", "custom")),
            )  # fmt: skip
        )
    return pairs


def question_head(model: Model, pair: ContrastPair, *, chat: bool | None = None) -> tuple[str, str]:
    """The question up to where the answer goes, and the separator before the answer.

    In the model's chat template (when it has one and `chat` is not False)
    the answer opens the assistant's turn; otherwise it follows "Answer:".
    """
    question = QUESTION.format(pair.statement)
    template = getattr(model.tokenizer, "chat_template", None)
    if chat and template is None:
        raise InputError(f"{model.name} has no chat template")
    if template is not None and chat is not False:
        head = model.tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
        )
        return head, ""
    return f"{question}\nAnswer:", " "


def pair_texts(model: Model, pair: ContrastPair, *, chat: bool | None = None) -> tuple[str, str]:
    """(x+, x−): the question answered both ways (see `question_head`)."""
    head, sep = question_head(model, pair, chat=chat)
    return head + sep + pair.positive, head + sep + pair.negative
