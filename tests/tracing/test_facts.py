"""Fact sets: GeoNames relations, the user's JSON, subject spans and the known-fact filter."""

from __future__ import annotations

import json

import pytest

from mechscope.errors import InputError
from mechscope.testing import tiny_model
from mechscope.tracing.facts import (
    TEMPLATES,
    Fact,
    fact_from_prompt,
    fact_set,
    geography_facts,
    known_facts,
    load_facts,
    neighbour_facts,
    subject_span,
)


@pytest.mark.parametrize("relation", list(TEMPLATES))
def test_geography_facts_are_unambiguous_prompts(relation):
    facts = geography_facts(relation, limit=40)
    assert len(facts) == 40
    assert len({f.subject for f in facts}) == 40
    for f in facts:
        assert f.prompt.startswith(f.template.split("{}")[0] + f.subject) and f.object != f.subject
        assert len(f.paraphrases()) == len(TEMPLATES[relation]) - 1
    with pytest.raises(InputError, match="unknown relation"):
        geography_facts("country_language")


def test_capitals_are_right():
    capitals = {f.subject: f.object for f in geography_facts("country_capital")}
    assert capitals["France"] == "Paris" and capitals["Japan"] == "Tokyo"
    cities = {f.subject: f.object for f in geography_facts("city_country")}
    assert cities["Istanbul"] == "Turkey"


def test_load_facts_and_its_errors(tmp_path):
    good = tmp_path / "facts.json"
    good.write_text(
        json.dumps(
            [{"subject": "Ada Lovelace", "template": "{} worked on the", "object": "Engine"}]
        )
    )
    (fact,) = load_facts(good)
    assert (
        fact.prompt == "Ada Lovelace worked on the"
        and fact.relation == "custom"
        and fact.paraphrases() == []
    )
    cases = {
        "[{}]": "lacks subject, template, object",
        '[{"subject": "a", "template": "no slot", "object": "b"}]': "one {}",
        '{"subject": "a"}': "JSON list",
        "[": "not valid JSON",
    }
    for text, message in cases.items():
        bad = tmp_path / "bad.json"
        bad.write_text(text)
        with pytest.raises(InputError, match=message):
            load_facts(bad)
    with pytest.raises(InputError, match="no such fact file"):
        load_facts(tmp_path / "missing.json")


def test_subject_span_is_exact():
    model = tiny_model("llama")  # one token per character
    fact = Fact("Rome", "The city of {} lies in", "Italy")
    start, end = subject_span(model, fact)
    tokens = model.to_str_tokens(fact.prompt)
    assert "".join(tokens[start:end]) == "Rome" and (start, end) == (12, 16)
    assert subject_span(model, fact, prepend_bos=True) == (13, 17)
    assert subject_span(model, Fact("Rome", "{} is in", "Italy")) == (0, 4)


def test_known_facts_ranks_the_objects_first_token():
    model = tiny_model("llama")
    facts = [Fact("Rome", "{} is in", "Italy"), Fact("Paris", "The city {} is in", "France")]
    everything = known_facts(model, facts, max_rank=10_000)
    assert [k.fact for k in everything] == facts
    for k in everything:
        probs = model.run(k.fact.prompt).logits[0, -1].softmax(-1)
        assert k.object_token == model.to_tokens(" " + k.fact.object, prepend_bos=False)[0, 0]
        assert k.probability == pytest.approx(float(probs[k.object_token]), rel=1e-4)
        assert k.rank == int((probs > probs[k.object_token]).sum())
    top_only = known_facts(model, facts)
    assert all(k.rank == 0 for k in top_only) and len(top_only) <= 2


@pytest.mark.model
def test_fact_from_prompt_finds_the_relation_and_the_models_answer():
    model = tiny_model("llama", seed=0)
    fact = fact_from_prompt(model, "The capital of France is the city of", "France", "Paris")
    assert fact == Fact("France", "The capital of {} is the city of", "Paris", "country_capital")
    free = fact_from_prompt(model, "Bob likes to eat", "Bob")  # the object: the model's next token
    top = int(model.run("Bob likes to eat").logits[0, -1].argmax())
    assert free.relation == "custom" and free.object == model.tokenizer.decode([top]).strip()
    with pytest.raises(InputError, match="does not occur"):
        fact_from_prompt(model, "The capital of France is", "Spain", "Madrid")
    with pytest.raises(InputError, match="unknown relation 'capitals'; built in: country_capital"):
        fact_from_prompt(model, "The capital of France is", "France", "Paris", "capitals")


def test_fact_set_splits_over_relations_and_names_bad_ones():
    model = tiny_model("llama", seed=0)
    facts = fact_set(model, "country_capital,city_country", 10, known=False, seed=3)
    assert [f.relation for f in facts] == ["country_capital"] * 5 + ["city_country"] * 5
    assert facts == fact_set(model, "country_capital,city_country", 10, known=False, seed=3)
    with pytest.raises(InputError, match="got 'capitals'"):
        fact_set(model, "capitals", 10)


def test_neighbours_leave_out_the_subject_and_facts_whose_answer_is_the_new_object():
    model = tiny_model("llama", seed=0)
    pool = geography_facts("country_capital", limit=60)
    france = next(f for f in pool if f.subject == "France")
    rome = next(f for f in pool if f.object == "Rome")
    chosen = neighbour_facts(model, france, "Rome", pool, n=100)
    assert france not in chosen and rome not in chosen and len(chosen) == len(pool) - 2
    assert neighbour_facts(model, france, "Rome", pool, n=5) == chosen[:5]
    with pytest.raises(InputError, match="give the neighbour facts"):
        neighbour_facts(model, Fact("Bob", "{} eats", "rice", "custom"), "bread")
    with pytest.raises(InputError, match="no neighbour facts left"):
        neighbour_facts(model, france, "Rome", [france, rome])


def test_smollm2_knows_geography(smollm2):
    known = known_facts(smollm2, geography_facts("country_capital", limit=60))
    assert len(known) >= 25
    assert any(k.fact.subject == "Japan" and k.probability > 0.5 for k in known)
