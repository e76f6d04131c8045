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
from torch import Tensor
from tqdm.auto import tqdm

from ..core.model import Model
from ..errors import InputError
from .data import ContrastPair
from .probes import (
    Accuracy,
    CCSProbe,
    LinearDirection,
    Normaliser,
    hidden_states,
    logistic_probe,
    mean_diff_probe,
    zero_shot_logodds,
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
    zero_shot_calibrated: Accuracy | None = None  # log-odds thresholded at their median
    directions: dict[str, list[LinearDirection]] = field(default_factory=dict, repr=False)

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
            "zero_shot_calibrated": (self.zero_shot_calibrated.__dict__
                                     if self.zero_shot_calibrated else None),
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
                zero_shot_calibrated=(Accuracy(**data["zero_shot_calibrated"])
                                      if data.get("zero_shot_calibrated") else None),
                accuracy={m: [Accuracy(**a) for a in accs] for m, accs in data["accuracy"].items()},
            )  # fmt: skip
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise InputError(f"{path} is not saved probe results: {e}") from None

    def figure(self, path: str | Path) -> dict[str, Path]:
        """Accuracy per layer of each method, zero-shot as a flat line (PNG, SVG, HTML)."""
        from ..figures import line

        series = {m: [a.value for a in accs] for m, accs in self.accuracy.items()}
        series["zero-shot"] = [self.zero_shot.value] * len(self.layers)
        if self.zero_shot_calibrated is not None:
            series["zero-shot (calibrated)"] = [self.zero_shot_calibrated.value] * len(self.layers)
        return line(
            series, path, title=f"held-out accuracy on {self.n_test} contrast pairs "
            f"(trained on {self.n_train})", x_labels=[str(i) for i in self.layers],
            x_title="layer", y_title="accuracy",
        )  # fmt: skip

    def __repr__(self) -> str:
        parts = [
            f"{m} {self.best(m)[1].value:.3f} at layer {self.best(m)[0]}" for m in self.accuracy
        ]
        zs = f"zero-shot {self.zero_shot.value:.3f}"
        if self.zero_shot_calibrated is not None:
            zs += f" (calibrated {self.zero_shot_calibrated.value:.3f})"
        return f"ProbeResults({', '.join(parts)}, {zs})"

    def save_directions(self, folder: str | Path, layers: str = "best") -> list[Path]:
        """Each method's fitted direction as safetensors: at its best layer, or at ``"all"``."""
        if not self.directions:
            raise InputError("these results hold no fitted directions (reopened from JSON?)")
        out = []
        for method, ds in self.directions.items():
            keep = [self.best(method)[0]] if layers == "best" else self.layers
            for d in ds:
                if d.layer in keep:
                    out.append(d.save(Path(folder) / f"{method}_L{d.layer}.safetensors"))
        return out


def probe_layers(
    model: Model,
    pairs: Sequence[ContrastPair],
    *,
    test: int = 400,
    layers: Sequence[int] | None = None,
    restarts: int = 10,
    epochs: int = 1000,
    chat: bool | None = None,
    states: tuple[Tensor, Tensor] | None = None,
    seed: int = 0,
    progress: bool = True,
) -> ProbeResults:
    """Fit every method at every layer on all but the last `test` pairs; score those.

    Hidden states are normalised with the training pairs' statistics. The
    fitted probes are kept in ``results.directions`` (CCS oriented with the
    training labels, for use as directions only: its accuracy is reported
    sign-free). `states` reuses hidden states read before (`hidden_states`).
    """
    if not 0 < test < len(pairs):
        raise InputError(f"test must be between 1 and {len(pairs) - 1} pairs, got {test}")
    assert model.dims is not None
    chosen = list(range(model.dims.n_layers)) if layers is None else list(layers)
    bad = [layer for layer in chosen if not 0 <= layer < model.dims.n_layers]
    if bad or not chosen:
        raise InputError(f"layers {bad} out of range: the model has {model.dims.n_layers}")
    labels = torch.tensor([p.label for p in pairs])
    if labels.all() or not labels.any():
        raise InputError("the pairs need both true and false statements")
    n_train = len(pairs) - test
    if states is None:
        states = hidden_states(model, pairs, chat=chat, progress=progress)
    pos, neg = states
    if pos.shape[:2] != (len(pairs), model.dims.n_layers) or neg.shape != pos.shape:
        raise InputError(
            f"states must be two [n_pairs, n_layers, d_model] tensors for {len(pairs)} pairs"
        )
    y_train, y_test = labels[:n_train], labels[n_train:]
    acc: dict[str, list[Accuracy]] = {m: [] for m in METHODS}
    directions: dict[str, list[LinearDirection]] = {m: [] for m in METHODS}
    losses = []
    for layer in tqdm(chosen, desc="probes", unit="layer", disable=not progress):
        norm = Normaliser.fit(pos[:n_train, layer], neg[:n_train, layer])
        p, n = norm(pos[:, layer], neg[:, layer])
        ptr, ntr, pte, nte = p[:n_train], n[:n_train], p[n_train:], n[n_train:]
        ccs, loss = CCSProbe.fit(ptr, ntr, restarts=restarts, epochs=epochs, seed=seed)
        acc["ccs"].append(Accuracy.of(ccs.credence(pte, nte) > 0.5, y_test).sign_free())
        losses.append(loss)
        ccs.orient(ptr, ntr, y_train)
        fitted = {
            "ccs": ccs.direction(),
            "logistic": logistic_probe(ptr, ntr, y_train),
            "mean_diff": mean_diff_probe(ptr, ntr, y_train),
        }
        for method, d in fitted.items():
            d.layer, d.method, d.normaliser = layer, method, norm
            directions[method].append(d)
            if method != "ccs":
                acc[method].append(Accuracy.of(d.predict(pte, nte), y_test))
    logodds = zero_shot_logodds(model, pairs[n_train:], chat=chat, progress=progress)
    zs = Accuracy.of(logodds > 0, y_test)
    zs_cal = Accuracy.of(logodds > logodds.median(), y_test)
    return ProbeResults(chosen, acc, zs, n_train, test, losses, zs_cal, directions)
