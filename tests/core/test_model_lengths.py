"""`Model.lengths`: the token count of each text, the last real position of a right-padded batch."""

from __future__ import annotations

import torch

from mechscope.testing import tiny_model


def test_lengths_index_the_last_real_token_of_a_padded_batch() -> None:
    model = tiny_model("llama")
    texts = ["a", "hello there, cat", "xyz"]
    lengths = model.lengths(texts)
    assert lengths.tolist() == [len(model.to_tokens(t)[0]) for t in texts]
    assert model.lengths("hello").tolist() == [len(model.to_tokens("hello")[0])]
    batch = model.run(texts).logits[torch.arange(3), lengths - 1]
    alone = torch.stack([model.run(t).logits[0, -1] for t in texts])
    assert torch.allclose(batch, alone, atol=1e-4)
    with_bos, without = (
        model.lengths(texts, prepend_bos=True),
        model.lengths(texts, prepend_bos=False),
    )
    assert torch.equal(with_bos, without + 1)
