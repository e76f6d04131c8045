"""The token methods of `Model`: text to token ids and back, padding, single tokens.

`Tokens` is a base class of `Model` that needs only its tokenizer, name and
device: ids with the tokenizer's own BOS rule (or a forced one), right
padding for runs and left padding for generation, and the checks that a
word is one token.

Example::

    model = mechscope.load("smollm2-135m")
    model.ids(" Paris", prepend_bos=False)       # [7042]
    model.to_single_token(" Paris")              # 7042 (and an InputError for two tokens)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import torch
from jaxtyping import Int
from torch import Tensor

from ..errors import InputError


class Tokens:
    """Token ids from text and back, for a model with a `tokenizer`; a base class of `Model`.

    Example: ``model.to_tokens(["Hi", "Hello there"])`` → ids [2, pos], the shorter row
    right-padded with ``model.pad_token_id``.
    """

    tokenizer: Any | None
    name: str

    if TYPE_CHECKING:

        @property
        def device(self) -> torch.device: ...

    def _need_tokenizer(self) -> Any:
        if self.tokenizer is None:
            raise InputError(f"{self.name} has no tokenizer: pass tensors, not text")
        return self.tokenizer

    @property
    def bos_token_id(self) -> int | None:
        tok = self._need_tokenizer()
        return tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id

    def ids(self, text: str, prepend_bos: bool | None = None) -> list[int]:
        """Token ids of one text; ``prepend_bos=None`` follows the tokenizer's own rule.

        Example::

            model.ids(" Paris", prepend_bos=False)     # [7042]
        """
        tok = self._need_tokenizer()
        if prepend_bos is None:
            return list(tok(text)["input_ids"])
        ids = list(tok(text, add_special_tokens=False)["input_ids"])
        if prepend_bos and self.bos_token_id is not None:
            ids = [self.bos_token_id, *ids]
        return ids

    def lengths(
        self, texts: str | Sequence[str], prepend_bos: bool | None = None
    ) -> Int[Tensor, " batch"]:
        """How many tokens each text takes, as `run` and `to_tokens` tokenize it.

        Batches are right-padded, so a text's last token sits at ``lengths - 1``.
        Example: ``logits[torch.arange(n), model.lengths(texts) - 1]`` (each next-token row).
        """
        texts = [texts] if isinstance(texts, str) else list(texts)
        return torch.tensor([len(self.ids(t, prepend_bos)) for t in texts], dtype=torch.long)

    def to_tokens(
        self, text: str | Sequence[str], prepend_bos: bool | None = None
    ) -> Int[Tensor, "batch pos"]:
        """Token ids, shape [batch, pos]; a list of texts is right-padded with the pad id.

        ``prepend_bos``: None (default) does what the tokenizer does by itself,
        so the numbers match plain HF use (SmolLM2's adds no BOS; Llama 2's
        does); True puts the BOS token first, False never does. The padded
        positions of a batch are masked in `run`.
        """
        texts = [text] if isinstance(text, str) else list(text)
        if not texts or not all(isinstance(t, str) for t in texts):
            raise InputError("to_tokens takes a string or a non-empty list of strings")
        rows = [self.ids(t, prepend_bos) for t in texts]
        if max(len(r) for r in rows) == 0:
            raise InputError("the text is empty and no BOS token was prepended")
        return self.pad(rows)[0]

    def pad(
        self, rows: Sequence[Sequence[int]], side: Literal["right", "left"] = "right"
    ) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
        """Pad token rows with the pad id: (ids, attention mask), on the model's device.

        Right padding (the default) keeps positions absolute, as `run` expects;
        generation pads on the left.

        Example::

            ids, mask = model.pad([model.ids(p) for p in prompts])
            model.run({"input_ids": ids, "attention_mask": mask})
        """
        if not rows:
            raise InputError("pad takes at least one row of token ids")
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            span = slice(0, len(r)) if side == "right" else slice(width - len(r), width)
            ids[i, span] = torch.tensor(list(r), dtype=torch.long)
            mask[i, span] = 1
        return ids.to(self.device), mask.to(self.device)

    @property
    def pad_token_id(self) -> int:
        tok = self._need_tokenizer()
        for candidate in (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id):
            if candidate is not None:
                return int(candidate)
        return 0

    def to_str_tokens(
        self, text: str | Tensor | Sequence[int], prepend_bos: bool | None = None
    ) -> list[str]:
        """The tokens of one text (or of one row of ids) as strings."""
        if isinstance(text, str):
            ids = self.ids(text, prepend_bos)
        else:
            ids = torch.as_tensor(text).reshape(-1).tolist()
        tok = self._need_tokenizer()
        return [tok.decode([i]) for i in ids]

    def to_single_token(self, word: str) -> int:
        """The id of `word` if it is exactly one token (mind the leading space: " Paris")."""
        ids = self.ids(word, prepend_bos=False)
        if len(ids) != 1:
            pieces = [self._need_tokenizer().decode([i]) for i in ids]
            raise InputError(f"{word!r} is {len(ids)} tokens, not one: {pieces}")
        return ids[0]
