"""Filled-in tracing results: a causal trace, an average over facts, a ROME edit and its report."""

from __future__ import annotations

import torch

from mechscope.results import Result
from mechscope.tracing.edits import Edit, EditReport
from mechscope.tracing.results import AverageTrace, CausalTrace, Fact

FACT = Fact("The Eiffel Tower", "{} is located in the city of", "Paris")
CAPITAL = Fact("Japan", "The capital of {} is the city of", "Tokyo", "country_capital")


def samples() -> list[Result]:
    g = torch.Generator().manual_seed(0)
    tokens = ["<s>", "The", " E", "iff", "el", " Tower", " is", " located", " in", " the", " city"]
    trace = CausalTrace(
        fact=FACT,
        tokens=tokens,
        subject=(1, 6),
        clean=0.702,
        corrupted=0.02,
        scores={k: torch.rand(4, len(tokens), generator=g) for k in ("hidden", "mlp", "attn")},
        noise=0.41,
        samples=10,
        window=3,
    )
    effects = {k: torch.rand(6, 4, generator=g) for k in ("hidden", "mlp")}
    effects["mlp"][1] = float("nan")  # no fact had a middle subject token
    average = AverageTrace(
        effects=effects,
        counts=[3, 0, 3, 2, 2, 3],
        n_facts=3,
        clean=0.5,
        corrupted=0.1,
        noise=0.4,
        samples=2,
        window=10,
        facts=[FACT.to_dict(), CAPITAL.to_dict(), {"subject": "Rome", "template": "{} is in",
                                                   "object": "Italy", "relation": "custom"}],
    )  # fmt: skip
    edit = Edit(
        fact=CAPITAL,
        new_object="Cairo",
        layer=5,
        value=torch.randn(16, generator=g),
        key_dir=torch.randn(64, generator=g),
        key=torch.randn(64, generator=g),
        history=[{"step": 0, "nll": 4.5, "kl": 0.0, "loss": 4.5},
                 {"step": 1, "nll": 0.04, "kl": 0.12, "loss": 0.05}],
        value_norm=21.2,
        seconds=24.5,
    )  # fmt: skip
    report = EditReport(
        fact=CAPITAL.to_dict(),
        new_object="Cairo",
        layer=5,
        prompts={
            "edited": [CAPITAL.prompt],
            "paraphrase": ["It rains. Japan's capital city is"],
            "paraphrase_bare": ["Japan's capital city is"],
            "neighbourhood": ["The capital of France is the city of"],
            "generation": ["Japan is", "Japan is known for"],
        },
        neighbour_objects=["Paris"],
        before={"edited": [[-0.3, -9.1]], "paraphrase": [[-0.5, -8.0]],
                "paraphrase_bare": [[-0.4, -7.5]], "neighbourhood": [[-0.2, -9.9]]},
        after={"edited": [[-6.0, -0.1]], "paraphrase": [[-5.5, -0.3]],
               "paraphrase_bare": [[-0.9, -1.5]], "neighbourhood": [[-0.3, -8.8]]},
        top_before={"edited": [" Tokyo"], "paraphrase": [" Tokyo"], "paraphrase_bare": [" Tokyo"],
                    "neighbourhood": [" Paris"]},
        top_after={"edited": [" Cairo"], "paraphrase": [" Cairo"], "paraphrase_bare": [" Tokyo"],
                   "neighbourhood": [" Paris"]},
        generations_before=["a country in East Asia.", "its sushi and temples."],
        generations_after=["a city in Egypt, Cairo.", "its pyramids & <b>Nile</b>."],
        seconds=24.5,
    )  # fmt: skip
    return [trace, average, edit, report]
