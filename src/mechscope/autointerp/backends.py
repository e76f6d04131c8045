"""Language-model backends for explaining and simulating units: a local model, or any HTTP server.

A backend answers chat messages (`chat`, `chat_many`). The local backend runs
a `mechscope.Model` with its chat template (greedy unless a temperature is
given) and can also give exact next-token log-probabilities at chosen
positions of a prompt in one forward (`position_logprobs`), which the
simulator uses to read a distribution over activation digits per token. The
OpenAI-compatible HTTP backend lives in `autointerp.http`.

Example::

    from mechscope.autointerp import LocalBackend
    backend = LocalBackend(mechscope.load())
    backend.chat([{"role": "user", "content": "Say hi"}], max_tokens=5).text
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from jaxtyping import Float
from torch import Tensor

from ..core.interventions import stop as stop_at
from ..core.model import Model
from ..errors import InputError

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": ...}


@dataclass(frozen=True)
class Completion:
    """One answer: its text, and per generated token its top log-probabilities when known.

    Example: ``backend.chat(messages, logprobs=3).logprobs[0]`` → ``{" Hi": -0.1, …}``.
    """

    text: str
    logprobs: list[dict[str, float]] | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    seconds: float = 0.0
    cached: bool = False
    meta: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Backend(Protocol):
    """What the explainer and the simulator need from a language model.

    Example: ``isinstance(LocalBackend(model), Backend)`` → True (a runtime-checkable Protocol).
    """

    name: str

    def chat(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int = 128,
        temperature: float = 0.0,
        logprobs: int | None = None,
    ) -> Completion: ...

    def chat_many(
        self,
        requests: Sequence[Sequence[Message]],
        *,
        max_tokens: int = 128,
        temperature: float = 0.0,
        logprobs: int | None = None,
    ) -> list[Completion | Exception]: ...


class LocalBackend:
    """A local causal LM through `mechscope.Model`: chat template, greedy decoding, exact log-probs.

    Example::

        backend = LocalBackend(mechscope.load())
        backend.chat([{"role": "user", "content": "Say hi"}], max_tokens=5).text
    """

    def __init__(self, model: Model, *, seed: int = 0) -> None:
        if model.tokenizer is None:
            raise InputError(f"{model.name} has no tokenizer: a backend needs one")
        if getattr(model.tokenizer, "chat_template", None) is None:
            raise InputError(
                f"{model.name}'s tokenizer has no chat template: use an instruct model as "
                "explainer (the default smollm2-135m is one)"
            )
        self.model = model
        self.name = f"local:{model.name}"
        self.seed = seed

    def __repr__(self) -> str:
        return f"LocalBackend({self.model.name})"

    def prompt_ids(
        self, messages: Sequence[Message], *, generation_prompt: bool = True
    ) -> list[int]:
        """Token ids of `messages` under the model's chat template."""
        out = self.model.tokenizer.apply_chat_template(
            list(messages), add_generation_prompt=generation_prompt, tokenize=True
        )
        if isinstance(out, dict) or hasattr(out, "input_ids"):
            out = out["input_ids"]
        return list(out)

    def chat(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int = 128,
        temperature: float = 0.0,
        logprobs: int | None = None,
    ) -> Completion:
        """Generate an answer (greedy when `temperature` is 0); `logprobs` keeps that many alternatives."""
        ids = self.prompt_ids(messages)
        return self._generate([ids], max_tokens, temperature, logprobs)[0]

    @torch.no_grad()
    def _generate(
        self,
        prompts: Sequence[Sequence[int]],
        max_tokens: int,
        temperature: float,
        logprobs: int | None,
    ) -> list[Completion]:
        """One `generate` call for prompts of one length (so no padding touches their numbers)."""
        start = time.perf_counter()
        tok = self.model.tokenizer
        ids = torch.tensor([list(p) for p in prompts], device=self.model.device)
        sample = temperature > 0
        if sample:
            torch.manual_seed(self.seed)
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        out = self.model.hf.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_tokens,
            do_sample=sample,
            temperature=temperature if sample else None,
            top_p=None,
            top_k=None,
            pad_token_id=pad,
            output_scores=logprobs is not None,
            return_dict_in_generate=True,
        )
        seconds = (time.perf_counter() - start) / len(prompts)
        eos = tok.eos_token_id
        answers = []
        for row in range(len(prompts)):
            new = out.sequences[row, ids.shape[1] :]
            if len(prompts) > 1 and eos is not None:  # a row that ended early is padded after
                ends = (new == eos).nonzero()
                new = new[: int(ends[0]) + 1] if len(ends) else new
            tops = None
            if logprobs is not None:
                tops = []
                for step in out.scores[: len(new)]:
                    values, index = step[row].float().log_softmax(-1).topk(max(logprobs, 1))
                    tops.append(
                        {tok.decode([int(i)]): float(v) for v, i in zip(values, index, strict=True)}
                    )
            answers.append(
                Completion(
                    text=tok.decode(new, skip_special_tokens=True),
                    logprobs=tops,
                    tokens_in=int(ids.shape[1]),
                    tokens_out=int(new.numel()),
                    seconds=seconds,
                )
            )
        return answers

    def chat_many(
        self,
        requests: Sequence[Sequence[Message]],
        *,
        max_tokens: int = 128,
        temperature: float = 0.0,
        logprobs: int | None = None,
        batch_size: int = 8,
    ) -> list[Completion | Exception]:
        """`chat` for every request; an error is returned in its slot, not raised.

        Greedy requests whose prompts have the same length are generated
        together, `batch_size` at a time (one forward per new token for all of
        them, and no padding, so each answer is the one `chat` gives);
        sampled ones one by one, each from the backend's seed.
        """
        out: list[Completion | Exception | None] = [None] * len(requests)
        groups: dict[int, list[tuple[int, list[int]]]] = {}
        for n, messages in enumerate(requests):
            try:
                ids = self.prompt_ids(messages)
            except Exception as err:  # one bad request must not sink a batch
                out[n] = err
                continue
            key = len(ids) if temperature <= 0 else -1 - n  # sampled: a group of its own
            groups.setdefault(key, []).append((n, ids))
        for members in groups.values():
            for b in range(0, len(members), max(1, batch_size)):
                chunk = members[b : b + max(1, batch_size)]
                try:
                    if len(chunk) == 1:  # through `chat`, which a subclass may wrap
                        answers: list[Completion | Exception] = [
                            self.chat(
                                requests[chunk[0][0]],
                                max_tokens=max_tokens,
                                temperature=temperature,
                                logprobs=logprobs,
                            )
                        ]
                    else:
                        answers = list(
                            self._generate(
                                [ids for _, ids in chunk], max_tokens, temperature, logprobs
                            )
                        )
                except Exception as err:
                    answers = [err] * len(chunk)
                for (n, _), answer in zip(chunk, answers, strict=True):
                    out[n] = answer
        return [a for a in out if a is not None]

    def position_logprobs(
        self, ids: Sequence[int], positions: Sequence[int], candidates: Sequence[int]
    ) -> Float[Tensor, "position candidate"]:
        """Log-probabilities of `candidates` as the next token after each of `positions`, one forward."""
        return self.position_logprobs_many([ids], [positions], candidates)[0]

    @torch.no_grad()
    def position_logprobs_many(
        self,
        seqs: Sequence[Sequence[int]],
        positions: Sequence[Sequence[int]],
        candidates: Sequence[int],
        *,
        batch_tokens: int = 8192,
    ) -> list[Tensor]:
        """`position_logprobs` for many prompts, right-padded into batches of about `batch_tokens`.

        Right padding leaves every real position exactly as in a forward of its own.
        """
        cand = torch.tensor(list(candidates))
        out: list[Tensor | None] = [None] * len(seqs)
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
        pad = self.model.pad_token_id
        start = 0
        while start < len(order):
            width = len(seqs[order[start]])
            stop = start + 1
            while stop < len(order) and len(seqs[order[stop]]) * (stop - start + 1) <= batch_tokens:
                width = len(seqs[order[stop]])
                stop += 1
            group = order[start:stop]
            x = torch.full((len(group), width), pad, dtype=torch.long)
            mask = torch.zeros_like(x)
            for row, i in enumerate(group):
                x[row, : len(seqs[i])] = torch.tensor(list(seqs[i]))
                mask[row, : len(seqs[i])] = 1
            # the forward ends at the final norm; only the positions read are unembedded
            normed = self.model.run(
                {"input_ids": x, "attention_mask": mask},
                save="final_norm",
                interventions=[stop_at("final_norm")],
            ).cache["final_norm"]
            for row, i in enumerate(group):
                picked = self.model.unembed(normed[row, torch.tensor(list(positions[i]))]).float()
                out[i] = picked.log_softmax(-1)[:, cand].cpu()
            start = stop
        return [t for t in out if t is not None]
