"""Every probe at every layer: accuracy on held-out contrast pairs, with 95% intervals.

`probe_layers` splits the pairs (the last `test` are held out), reads the
hidden states once, and fits CCS, logistic regression and difference of
means at each layer on the training pairs; zero-shot prompting is the
baseline. CCS accuracy is max(acc, 1 − acc): its sign is not learned.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..core.model import Model
from ..errors import InputError
from .data import ContrastPair
from .probes import (
    Accuracy,
    CCSProbe,
    hidden_states,
    logistic_probe,
    mean_diff_probe,
    normalise,
    zero_shot,
)

METHODS = ("ccs", "logistic", "mean_diff")


@dataclass
class ProbeResults:
    """Held-out accuracy per layer of each method, and the zero-shot baseline."""

    layers: list[int]
    accuracy: dict[str, list[Accuracy]]  # method -> one per layer
    zero_shot: Accuracy
    n_train: int
    n_test: int
    ccs_loss: list[float] = field(default_factory=list)

    def best(self, method: str) -> tuple[int, Accuracy]:
        """The layer where `method` is most accurate, and that accuracy."""
        if method not in self.accuracy:
            raise InputError(f"unknown method {method!r}; valid: {', '.join(self.accuracy)}")
        accs = self.accuracy[method]
        i = max(range(len(accs)), key=lambda j: accs[j].value)
        return self.layers[i], accs[i]

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "layers": self.layers, "n_train": self.n_train, "n_test": self.n_test,
            "zero_shot": self.zero_shot.__dict__, "ccs_loss": self.ccs_loss,
            "accuracy": {m: [a.__dict__ for a in accs] for m, accs in self.accuracy.items()},
        }  # fmt: skip
        path.write_text(json.dumps(data, indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> ProbeResults:
        try:
            data = json.loads(Path(path).read_text())
            return cls(
                layers=data["layers"], n_train=data["n_train"], n_test=data["n_test"],
                zero_shot=Accuracy(**data["zero_shot"]), ccs_loss=data.get("ccs_loss", []),
                accuracy={m: [Accuracy(**a) for a in accs] for m, accs in data["accuracy"].items()},
            )  # fmt: skip
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise InputError(f"{path} is not saved probe results: {e}") from None

    def figure(self, path: str | Path) -> dict[str, Path]:
        """Accuracy per layer of each method, zero-shot as a flat line (PNG, SVG, HTML)."""
        from ..figures import line

        series = {m: [a.value for a in accs] for m, accs in self.accuracy.items()}
        series["zero-shot"] = [self.zero_shot.value] * len(self.layers)
        return line(
            series, path, title=f"held-out accuracy on {self.n_test} contrast pairs "
            f"(trained on {self.n_train})", x_labels=[str(i) for i in self.layers],
            x_title="layer", y_title="accuracy",
        )  # fmt: skip

    def __repr__(self) -> str:
        parts = [
            f"{m} {self.best(m)[1].value:.3f} at layer {self.best(m)[0]}" for m in self.accuracy
        ]
        return f"ProbeResults({', '.join(parts)}, zero-shot {self.zero_shot.value:.3f})"


def probe_layers(
    model: Model,
    pairs: Sequence[ContrastPair],
    *,
    test: int = 400,
    layers: Sequence[int] | None = None,
    restarts: int = 10,
    epochs: int = 1000,
    chat: bool | None = None,
    seed: int = 0,
    progress: bool = True,
) -> ProbeResults:
    """Fit every method at every layer on all but the last `test` pairs; score those."""
    if not 0 < test < len(pairs):
        raise InputError(f"test must be between 1 and {len(pairs) - 1} pairs, got {test}")
    assert model.dims is not None
    chosen = list(range(model.dims.n_layers)) if layers is None else list(layers)
    bad = [layer for layer in chosen if not 0 <= layer < model.dims.n_layers]
    if bad:
        raise InputError(f"layers {bad} out of range: the model has {model.dims.n_layers}")
    labels = torch.tensor([p.label for p in pairs])
    if labels.all() or not labels.any():
        raise InputError("the pairs need both true and false statements")
    n_train = len(pairs) - test
    pos, neg = hidden_states(model, pairs, chat=chat, progress=progress)
    y_train, y_test = labels[:n_train], labels[n_train:]
    acc: dict[str, list[Accuracy]] = {m: [] for m in METHODS}
    losses = []
    for layer in tqdm(chosen, desc="probes", unit="layer", disable=not progress):
        p, n = normalise(pos[:, layer]), normalise(neg[:, layer])
        ptr, ntr, pte, nte = p[:n_train], n[:n_train], p[n_train:], n[n_train:]
        ccs, loss = CCSProbe.fit(ptr, ntr, restarts=restarts, epochs=epochs, seed=seed)
        a = Accuracy.of(ccs.credence(pte, nte) > 0.5, y_test)
        acc["ccs"].append(
            a if a.value >= 0.5 else Accuracy(1 - a.value, a.n, 1 - a.high, 1 - a.low)
        )
        losses.append(loss)
        lr = logistic_probe(ptr, ntr, y_train)
        acc["logistic"].append(Accuracy.of(lr.predict(pte, nte), y_test))
        md = mean_diff_probe(ptr, ntr, y_train)
        acc["mean_diff"].append(Accuracy.of(md.predict(pte, nte), y_test))
    zs = Accuracy.of(zero_shot(model, pairs[n_train:], chat=chat), y_test)
    return ProbeResults(chosen, acc, zs, n_train, test, losses)
