"""``mechscope probe``, ``mechscope steer`` and ``mechscope steer-sweep`` from the shell."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from ..errors import InputError
from ..store import read_text_file
from .options import Placement, floats, numbers, placed

console = Console()

MODEL_OPT = typer.Option(
    "smollm2-135m", "--model", help="Built-in name, HF folder, .gguf file, or hub id."
)
DATASETS = ("sentiment", "geography")


def _pairs(model, data: str, n: int, seed: int):  # noqa: ANN001, ANN202
    """Contrast pairs: a built-in data set or the user's JSON file."""
    from ..probes import geography_pairs, load_pairs, sentiment_pairs

    if data == "sentiment":
        return sentiment_pairs(limit=n, seed=seed)
    if data == "geography":
        return geography_pairs(limit=n, known_by=model, seed=seed)
    if data.endswith(".json") or Path(data).exists():
        return load_pairs(data)[:n]
    raise InputError(f"--data takes {', '.join(DATASETS)} or a JSON file of pairs, got {data!r}")


def _layers(spec: str | None, n_layers: int) -> list[int] | None:
    if spec is None or spec == "all":
        return None
    try:
        return numbers(spec)
    except ValueError:
        raise InputError(
            f"--layers takes 'all', '0,2,4' or '0-{n_layers - 1}', got {spec!r}"
        ) from None


@placed
def probe_cmd(
    model: str = typer.Argument("smollm2-135m", help="Built-in name, HF folder, .gguf, hub id."),
    data: str = typer.Option(
        "sentiment",
        "--data",
        help="sentiment (labelled tweets), geography (true/false "
        "statements the model's facts decide) or a JSON file of pairs.",
    ),  # fmt: skip
    n: int = typer.Option(1000, "--n", help="How many contrast pairs (train + test)."),
    test: int = typer.Option(400, "--test", help="Held-out pairs (the last ones)."),
    layers: str = typer.Option("all", "--layers", help="all, 0,2,4 or 0-10."),
    restarts: int = typer.Option(10, "--restarts", help="CCS random restarts."),
    epochs: int = typer.Option(1000, "--epochs", help="CCS training epochs."),
    seed: int = typer.Option(0, "--seed"),
    out: Path = typer.Option(None, "--out", help="Run folder (default: runs/probe-DATA)."),
    *,
    place: Placement,
) -> None:
    """Probes for latent knowledge: CCS, logistic regression, mean difference and zero-shot per layer."""
    from ..probes.runs import probe_run

    if n < 2 or not 0 < test < n or restarts < 1 or epochs < 1:
        raise InputError("need --n ≥ 2, 0 < --test < --n, --restarts and --epochs ≥ 1")
    m = place.load(model)
    assert m.dims is not None
    pairs = _pairs(m, data, n, seed)
    if len(pairs) <= test:
        raise InputError(f"only {len(pairs)} pairs from {data!r}: lower --test below that")
    name = Path(data).stem if data not in DATASETS else data
    target = out or Path("runs") / f"probe-{name}"
    console.print(f"probing {len(pairs) - test} training / {test} held-out pairs into {target}")
    res = probe_run(m, pairs, target, dataset=name, test=test,
                    layers=_layers(layers, m.dims.n_layers), restarts=restarts, epochs=epochs,
                    seed=seed)  # fmt: skip
    console.print(res)
    console.print(f"saved to {target}; view it: mechscope serve {target}")


def _vector(model, layer, vector, plus, minus, topic, positive, negative, method):  # noqa: ANN001, ANN202, PLR0913
    """A steering vector from a file, a prompt pair, a topic or two text files."""
    from ..steering import SteeringVector, actadd, mean_diff_vector, pca_vector, topic_sentences

    given = [vector is not None, plus is not None or minus is not None, topic is not None,
             positive is not None or negative is not None]  # fmt: skip
    if method not in ("mean_diff", "pca"):
        raise InputError(f"--method must be mean_diff or pca, got {method!r}")
    if sum(given) != 1:
        raise InputError(
            "give one source: --vector FILE, --plus/--minus prompts, --topic WORDS, "
            "or --positive/--negative text files"
        )
    if vector is not None:
        if not Path(vector).is_file():
            raise InputError(f"no such steering vector file: {vector} (mechscope steer --save …)")
        v = SteeringVector.load(vector)
        if layer is not None and layer != v.layer:
            v = SteeringVector(v.vector, layer, v.method, {**v.meta, "read_at": v.layer})
        return v
    if layer is None:
        raise InputError("--layer is needed to build a vector (which resid_pre to read and add to)")
    if plus is not None or minus is not None:
        if not plus or not minus:
            raise InputError("activation addition needs both --plus and --minus prompts")
        return actadd(model, plus, minus, layer)
    build = mean_diff_vector if method == "mean_diff" else pca_vector
    if topic is not None:
        words = [w.strip() for w in topic.split(",") if w.strip()]
        pos, neg = topic_sentences(words)
        v = build(model, pos, neg, layer)
        return dataclasses.replace(v, meta={**v.meta, "topic": words})
    if positive is None or negative is None:
        raise InputError("give both --positive and --negative (text files, one text per line)")
    texts = []
    for path in (positive, negative):
        lines = [ln.strip() for ln in read_text_file(path, "text").splitlines() if ln.strip()]
        if not lines:
            raise InputError(f"{path} has no texts (one per line)")
        texts.append(lines)
    return build(model, texts[0], texts[1], layer)


VECTOR = typer.Option(None, "--vector", help="A saved steering vector (.safetensors).")
PLUS = typer.Option(None, "--plus", help="Activation addition: the prompt to steer towards.")
MINUS = typer.Option(None, "--minus", help="Activation addition: the prompt to steer away from.")
TOPIC = typer.Option(
    None, "--topic", help="Comma-separated words: mean difference of corpus sentences with them."
)
POSITIVE = typer.Option(None, "--positive", help="Text file (one per line) to steer towards.")
NEGATIVE = typer.Option(None, "--negative", help="Text file (one per line) to steer away from.")
METHOD = typer.Option("mean_diff", "--method", help="For --topic/--positive: mean_diff or pca.")


@placed
def steer_cmd(
    prompt: str = typer.Argument(..., help="The prompt to continue."),
    model: str = MODEL_OPT,
    vector: Path = VECTOR,
    plus: str = PLUS,
    minus: str = MINUS,
    topic: str = TOPIC,
    positive: Path = POSITIVE,
    negative: Path = NEGATIVE,
    method: str = METHOD,
    layer: int = typer.Option(None, "--layer", help="Add to blocks.LAYER.resid_pre."),
    coef: float = typer.Option(1.0, "--coef", help="Coefficient on the vector."),
    max_new_tokens: int = typer.Option(40, "--max-new-tokens"),
    sample: bool = typer.Option(False, "--sample/--greedy", help="Sample instead of greedy."),
    seed: int = typer.Option(0, "--seed"),
    save: Path = typer.Option(None, "--save", help="Save the vector (.safetensors)."),
    *,
    place: Placement,
) -> None:
    """Generate from PROMPT with and without a steering vector, side by side."""
    from ..steering import generate

    if max_new_tokens < 1:
        raise InputError("--max-new-tokens must be at least 1")
    if save is not None and save.suffix != ".safetensors":
        raise InputError(f"--save must end in .safetensors, got {save}")
    m = place.load(model)
    v = _vector(m, layer, vector, plus, minus, topic, positive, negative, method)
    console.print(repr(v), highlight=False)
    kw = {"max_new_tokens": max_new_tokens, "do_sample": sample, "seed": seed}
    table = Table(title=f"{prompt!r}", show_lines=True)
    table.add_column("unsteered")
    table.add_column(f"steered (coef {coef:g}, layer {v.layer})")
    table.add_row(str(generate(m, prompt, None, **kw)), str(generate(m, prompt, v, coef, **kw)))
    console.print(table)
    if save is not None:
        console.print(f"saved the vector to {v.save(save)}")


@placed
def steer_sweep_cmd(
    model: str = MODEL_OPT,
    plus: str = PLUS,
    minus: str = MINUS,
    topic: str = TOPIC,
    positive: Path = POSITIVE,
    negative: Path = NEGATIVE,
    method: str = METHOD,
    layers: str = typer.Option("2,4,6,8", "--layers", help="Layers to build and add vectors at."),
    coefs: str = typer.Option("0.5,1,2,4", "--coefs", help="Coefficients to try."),
    words: str = typer.Option(
        None,
        "--words",
        help="Target words whose share of generations is the effect "
        "(default: the --topic words, else wedding words).",
    ),  # fmt: skip
    samples: int = typer.Option(4, "--samples", help="Samples per prompt per cell."),
    max_new_tokens: int = typer.Option(30, "--max-new-tokens"),
    seed: int = typer.Option(0, "--seed"),
    out: Path = typer.Option(None, "--out", help="Run folder (default: runs/steer-…)."),
    *,
    place: Placement,
) -> None:
    """Sweep layer × coefficient: the share of generations on a topic, and perplexity and KL costs."""
    from ..steering import WEDDING_WORDS
    from ..steering.runs import steer_run

    m = place.load(model)
    assert m.dims is not None
    chosen = _layers(layers, m.dims.n_layers) or list(range(m.dims.n_layers))
    cs = floats(coefs, "--coefs")
    if not cs or samples < 1 or max_new_tokens < 1:
        raise InputError("need at least one coefficient, --samples and --max-new-tokens ≥ 1")
    vectors = [_vector(m, layer, None, plus, minus, topic, positive, negative, method)
               for layer in chosen]  # fmt: skip
    if words is not None:
        target_words = [w.strip() for w in words.split(",") if w.strip()]
        if not target_words:
            raise InputError(f"--words takes words separated by commas, got {words!r}")
    elif topic:
        target_words = [w.strip() for w in topic.split(",") if w.strip()]
    else:
        target_words = list(WEDDING_WORDS)
    target = out or Path("runs") / f"steer-{vectors[0].method}"
    sweep = steer_run(m, vectors, cs, target, words=target_words, samples=samples,
                      max_new_tokens=max_new_tokens, seed=seed)  # fmt: skip
    console.print(sweep)
    console.print(f"saved to {target}; view it: mechscope serve {target}")
