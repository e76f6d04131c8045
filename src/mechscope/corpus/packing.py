"""Packing documents into token windows: one token stream, EOS between documents, BOS first.

`pack` tokenises documents into one stream and cuts it into windows that start
with BOS; `windows` and `window_batches` do this with a model's tokenizer.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any

import torch
from torch import Tensor

from ..core.model import Model
from ..errors import InputError
from .corpus import Corpus, open_corpus

# --- packing -----------------------------------------------------------------------------


def pack(
    documents: Iterable[str],
    tokenizer: Any,
    window: int,
    *,
    bos_id: int | None,
    sep_id: int | None,
    start: int = 0,
    limit: int | None = None,
    batch_docs: int = 64,
) -> Iterator[list[int]]:
    """Fixed windows of token ids cut from one stream of documents.

    Documents are tokenised without special tokens (text that looks like a
    special token stays text), `sep_id` goes between them, and the stream is
    cut into chunks of ``window - 1`` ids, each yielded as ``[bos_id, *chunk]``
    (chunks of `window` ids when `bos_id` is None). The tail shorter than a
    chunk is dropped. `start` skips that many windows (for resuming; the
    stream is still tokenised from the beginning), `limit` stops after that
    many.

    >>> ws = list(pack(["Hello world."], tok, 4, bos_id=0, sep_id=1))  # doctest: +SKIP
    """
    width = window - (bos_id is not None)
    if width < 1:
        raise InputError(f"window must be at least {2 if bos_id is not None else 1}, got {window}")
    if start < 0 or (limit is not None and limit < 0) or batch_docs < 1:
        raise InputError("start and limit must be >= 0 and batch_docs >= 1")
    stop = None if limit is None else start + limit
    head = [] if bos_id is None else [bos_id]
    done = 0  # windows cut so far, skipped or yielded
    buf: list[int] = []
    started = False  # a separator goes before every document but the first
    docs = iter(documents)
    while (stop is None or done < stop) and (batch := list(islice(docs, batch_docs))):
        encoded = tokenizer(
            batch,
            add_special_tokens=False,
            split_special_tokens=True,
            return_attention_mask=False,
            verbose=False,
        )["input_ids"]
        for ids in encoded:
            if ids:
                if sep_id is not None and started:
                    buf.append(sep_id)
                buf.extend(ids)
                started = True
        n = len(buf) // width
        first = min(n, max(start - done, 0))  # skipped windows are never sliced out
        done += first
        for k in range(first, n):
            if stop is not None and done >= stop:
                return
            yield head + buf[k * width : (k + 1) * width]
            done += 1
        del buf[: n * width]


def windows(
    model: Model,
    corpus: Corpus | str,
    window: int = 64,
    *,
    start: int = 0,
    limit: int | None = None,
) -> Iterator[list[int]]:
    """`pack` with the model's tokenizer: BOS first in each window, EOS between documents.

    >>> next(windows(model, "default", 64))[:3]  # doctest: +SKIP
    [1, 1024, 2150]
    """
    if model.tokenizer is None:
        raise InputError(f"{model.name} has no tokenizer: windows needs one to tokenise text")
    if not isinstance(corpus, Corpus):
        corpus = open_corpus(corpus)
    first, sep = boundary_tokens(model)
    return pack(
        corpus.documents(),
        model.tokenizer,
        window,
        bos_id=first,
        sep_id=sep,
        start=start,
        limit=limit,
    )


def window_batches(
    model: Model,
    corpus: Corpus | str,
    window: int,
    batch_size: int,
    *,
    start: int = 0,
    limit: int | None = None,
) -> Iterator[Tensor]:
    """`windows` grouped into id tensors [batch window] of `batch_size` rows (the last may be short).

    Example: ``next(window_batches(model, "default", 64, 8)).shape`` → [8, 64].
    """
    rows: list[list[int]] = []
    for ids in windows(model, corpus, window, start=start, limit=limit):
        rows.append(ids)
        if len(rows) == batch_size:
            yield torch.tensor(rows)
            rows = []
    if rows:
        yield torch.tensor(rows)


def boundary_tokens(model: Model) -> tuple[int | None, int | None]:
    """(first token of each window, separator between documents) for `model`.

    A tokenizer that prepends BOS itself (Llama 2, Gemma) gets its BOS first.
    Otherwise the document boundary the model saw in pretraining is used when
    it has one (``<|endoftext|>``: GPT-2, SmolLM2, Pythia), else BOS. Documents
    are separated by ``<|endoftext|>`` or EOS.

    Example: ``boundary_tokens(model)`` → ``(0, 0)`` for SmolLM2 (``<|endoftext|>`` both first and
    between documents); ``(0, 1)`` (BOS, EOS) for ``tiny_model("llama")``.
    """
    tok = model.tokenizer
    vocab = tok.get_vocab()
    eot = vocab.get("<|endoftext|>")
    adds_bos = tok.bos_token_id is not None and tok("a").input_ids[:1] == [tok.bos_token_id]
    first = tok.bos_token_id if adds_bos or eot is None else eot
    if first is None:
        first = model.bos_token_id
    return first, eot if eot is not None else tok.eos_token_id
