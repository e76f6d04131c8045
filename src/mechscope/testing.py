"""Tiny random models and a byte-level tokenizer, for tests (ours and yours).

`tiny_model(arch)` builds a 2-layer model of one supported family from a
config (d_model 32), with a byte-level tokenizer, in well under a second, with
no files and no network.

Example::

    from mechscope.testing import tiny_model
    model = tiny_model("llama")   # grouped-query attention: 4 heads, 2 key/value heads
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import transformers as tf
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from .core.model import Model
from .errors import InputError

ARCHS = ("llama", "gpt2", "gpt_neox", "gemma3")
_SPECIALS = ["<|bos|>", "<|eos|>", "<|pad|>"]


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with no merges: 256 byte tokens + BOS, EOS, PAD (259 ids).

    Example: ``len(tiny_tokenizer())`` → 259;
    ``tiny_tokenizer()("hi")["input_ids"]`` → ``[74, 75]``.
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=256 + len(_SPECIALS),
        special_tokens=_SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([], trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|bos|>", eos_token="<|eos|>", pad_token="<|pad|>"
    )


def tiny_config(arch: str, vocab_size: int = 259) -> tf.PretrainedConfig:
    """The config of a 2-layer, d_model-32 model of family `arch`.

    Example: ``tiny_config("gpt2").n_layer`` → 2;
    ``tiny_config("llama").num_key_value_heads`` → 2.
    """
    common = {"vocab_size": vocab_size, "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 2}
    # the shape every HF-named family shares: 2 blocks of d_model 32, 4 heads, MLP 64, and a
    # rotary context of 2,048 (GPT-2 keeps 256 learned positions)
    blocks = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 4, "max_position_embeddings": 2048, **common}  # fmt: skip
    if arch == "llama":
        return tf.LlamaConfig(num_key_value_heads=2, **blocks)
    if arch == "gpt2":
        return tf.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=256, **common)
    if arch == "gpt_neox":
        return tf.GPTNeoXConfig(**blocks)
    if arch == "gemma3":
        return tf.Gemma3TextConfig(num_key_value_heads=1, head_dim=8, sliding_window=4, **blocks)
    if arch == "gemma":  # Gemma 1 (not in ARCHS: it differs from Llama only in its norm's 1 + w)
        return tf.GemmaConfig(num_key_value_heads=1, head_dim=8, **blocks)
    raise InputError(f"unknown tiny architecture {arch!r}; valid: {', '.join(ARCHS)}")


def tiny_model(arch: str = "llama", seed: int = 0, dtype: torch.dtype = torch.float32) -> Model:
    """A randomly initialised 2-layer model of family `arch` with `tiny_tokenizer`, in eval mode.

    The weights are drawn in float32 and then cast, so every `dtype` holds the same model.

    Example: ``tiny_model("gpt2", dtype=torch.bfloat16).run("hi").logits.shape`` → [1, 2, 259].
    """
    config = tiny_config(arch)
    torch.manual_seed(seed)
    hf = tf.AutoModelForCausalLM.from_config(config, dtype=torch.float32).to(dtype)
    return Model(hf.eval(), tiny_tokenizer(), name=f"tiny-{arch}")


# Words a tiny IOI data set is built from: byte-level tiny tokenizers split words, these get one token
IOI_NAMES = ("Ann", "Bob", "Cat", "Dan", "Eve", "Fay", "Gus")
IOI_PLACES = ("store", "park")
IOI_OBJECTS = ("drink", "book")


def named_tiny_model(
    arch: str = "llama", words: Sequence[str] = (*IOI_NAMES, *IOI_PLACES, *IOI_OBJECTS)
) -> Model:
    """A tiny model (seed 0) whose tokenizer has " Ann", " store", … (`words`) as single tokens.

    Example::

        ds = ioi_dataset(named_tiny_model(), 6, names=IOI_NAMES, places=IOI_PLACES,
                         objects=IOI_OBJECTS)
    """
    from tokenizers import AddedToken

    tok = tiny_tokenizer()
    tok.add_tokens([AddedToken(" " + w, normalized=False) for w in words])
    torch.manual_seed(0)
    hf = tf.AutoModelForCausalLM.from_config(tiny_config(arch, vocab_size=len(tok)))
    return Model(hf.eval(), tok, name=f"tiny-{arch}-names")


def save_tiny(arch: str, folder: str | os.PathLike[str], seed: int = 0) -> Path:
    """Write `tiny_model(arch, seed)` as an HF folder (safetensors and tokenizer), for loading tests.

    Example::

        model = mechscope.load(save_tiny("llama", tmp_path / "tiny"), dtype="bfloat16")
    """
    model = tiny_model(arch, seed)
    path = Path(folder)
    model.hf.save_pretrained(path)
    model.tokenizer.save_pretrained(path)
    return path


# A minimal chat template for tiny models (the backends of `autointerp` need one).
TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<|bos|>{{ m['role'] }}\n{{ m['content'] }}<|eos|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|bos|>assistant\n{% endif %}"
)


def tiny_chat_model(arch: str = "llama", seed: int = 0) -> Model:
    """`tiny_model` whose tokenizer has a chat template, for explainer and simulator tests.

    Example::

        messages = [{"role": "user", "content": "hi"}]
        tiny_chat_model().tokenizer.apply_chat_template(messages, tokenize=False)  # "<|bos|>user…"
    """
    model = tiny_model(arch, seed)
    model.tokenizer.chat_template = TINY_CHAT_TEMPLATE
    return model


class ScriptedBackend:
    """A backend for tests that answers from a script, in turn.

    An answer is a string, an exception (returned in its slot by `chat_many`,
    raised by `chat`) or a function of the messages returning a string.

    Example::

        backend = ScriptedBackend(["first", RuntimeError("down")])
        backend.chat([{"role": "user", "content": "hi"}]).text      # "first"
        backend.chat([{"role": "user", "content": "hi"}])           # raises RuntimeError("down")
    """

    name = "scripted"

    def __init__(self, answers: Sequence[str | Exception | Callable[[Any], str]]) -> None:
        self.answers = list(answers)
        self.calls = 0

    def chat(self, messages: Any, **kw: Any) -> Any:
        (out,) = self.chat_many([messages], **kw)
        if isinstance(out, Exception):
            raise out
        return out

    def chat_many(self, requests: Sequence[Any], **kw: Any) -> list[Any]:
        from .autointerp.backends import Completion

        out: list[Any] = []
        for messages in requests:
            answer = self.answers[self.calls % len(self.answers)]
            self.calls += 1
            if callable(answer) and not isinstance(answer, Exception):
                answer = answer(messages)
            out.append(answer if isinstance(answer, Exception) else Completion(answer))
        return out


def run_cli(
    *args: str,
    cache: str | os.PathLike[str] | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m mechscope ARGS`` in a real process (own cache folder and extra `env`, if given).

    Example::

        res = run_cli("run", str(folder), "hello", cache=tmp_path)
        assert res.returncode == 0, res.stderr
    """
    environ = {**os.environ, "COLUMNS": "200", **(env or {})}
    if cache is not None:
        environ["MECHSCOPE_CACHE"] = str(cache)
    return subprocess.run(
        [sys.executable, "-m", "mechscope", *args],
        capture_output=True,
        text=True,
        env=environ,
        timeout=timeout,
    )


def edit_result(path: str | os.PathLike[str], change: Callable[[dict, dict], None]) -> None:
    """Apply `change(record, tensors)` to the JSON record and tensors of a saved result, in place.

    For tests that need a damaged or hostile result file (a wrong shape, markup in a
    string field) without going through the class's own checks.

    Example::

        edit_result(run / "sweep.safetensors", lambda r, t: r.update(target="<i>x</i>"))
    """
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), "pt") as f:
        meta = dict(f.metadata() or {})
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    entry = json.loads(meta["mechscope"])
    change(entry["record"], tensors)
    save_file(tensors, str(path), {**meta, "mechscope": json.dumps(entry)})
