"""Every probe at every layer: accuracy on held-out contrast pairs, with 95% intervals.

`probe_layers` splits the pairs (the last `test` are held out), reads the
hidden states once, and fits CCS, logistic regression and difference of
means at each layer on the training pairs; zero-shot prompting is the
baseline. CCS accuracy is max(acc, 1 − acc): its sign is not learned.
The result, `ProbeResults`, lives in `probes.results` and is re-exported here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

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
from .results import METHODS, ProbeResults

__all__ = ["METHODS", "ProbeResults", "probe_layers"]


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
    fitted probes are kept (``results.directions``; CCS oriented with the
    training labels, for use as directions only: its accuracy is reported
    sign-free). `states` reuses hidden states read before (`hidden_states`).

    Example::

        res = probe_layers(model, sentiment_pairs(limit=600), test=200, layers=[8, 16])
        res.best("logistic")  # (layer, Accuracy)
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
    normalisers = []
    losses = []
    for layer in tqdm(chosen, desc="probes", unit="layer", disable=not progress):
        norm = Normaliser.fit(pos[:n_train, layer], neg[:n_train, layer])
        normalisers.append(norm)
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
            d = dataclasses.replace(d, layer=layer, method=method, normaliser=norm)
            directions[method].append(d)
            if method != "ccs":
                acc[method].append(Accuracy.of(d.predict(pte, nte), y_test))
    logodds = zero_shot_logodds(model, pairs[n_train:], chat=chat, progress=progress)
    zs = Accuracy.of(logodds > 0, y_test)
    zs_cal = Accuracy.of(logodds > logodds.median(), y_test)
    return ProbeResults(
        layers=chosen, accuracy=acc, zero_shot=zs, n_train=n_train, n_test=test,
        ccs_loss=losses, zero_shot_calibrated=zs_cal,
        weights={m: torch.stack([d.weight for d in ds]) for m, ds in directions.items()},
        biases={m: [d.bias for d in ds] for m, ds in directions.items()},
        normalisers=normalisers,
    )  # fmt: skip
