"""Node names of a circuit graph, shared by the discovery code, the result and its figure.

Heads are written as everywhere else in mechscope, ``L{layer}H{head}``
(``L23H3``); MLPs ``MLP{layer}``, plus ``embed``, ``pos_embed`` and ``logits``.
A receiver is a node or a head's ``q``/``k``/``v`` input (``L3H0.k``: key/value
head 0 of layer 3, shared by its query heads under grouped-query attention).
Circuits saved before version 2 named heads ``a{layer}.{head}`` and MLPs
``m{layer}``; `upgrade_names` renames them.

Example: ``receiver_nodes("L3H0.k", 4, 2) == ["L3H0", "L3H1"]``.
"""

from __future__ import annotations

import re
from typing import Any

NODE_RE = re.compile(r"^(?:L(\d+)H(\d+)|MLP(\d+)|embed|pos_embed|logits)$")
"""A node name: ``L{layer}H{head}``, ``MLP{layer}``, ``embed``, ``pos_embed`` or ``logits``."""

_OLD_RE = re.compile(r"^(?:a(\d+)\.(\d+)(\.[qkv])?|m(\d+))$")


def head_node(layer: int, head: int, part: str = "") -> str:
    """The name of a head (or of its ``q``/``k``/``v`` input, with `part`).

    Example: ``head_node(23, 3)`` → ``"L23H3"``; ``head_node(3, 0, "k")`` → ``"L3H0.k"``.
    """
    return f"L{layer}H{head}" + (f".{part}" if part else "")


def mlp_node(layer: int) -> str:
    """The name of the MLP of `layer`.

    Example: ``mlp_node(12)`` → ``"MLP12"``.
    """
    return f"MLP{layer}"


def node_kind(node: str) -> str:
    """``"head"``, ``"MLP"`` or ``"input/output"`` (embeddings and logits).

    Example: ``node_kind("L23H3")`` → ``"head"``; ``node_kind("logits")`` → ``"input/output"``.
    """
    m = NODE_RE.match(node.split(".")[0])
    if m is not None and m.group(1) is not None:
        return "head"
    if m is not None and m.group(3) is not None:
        return "MLP"
    return "input/output"


def receiver_nodes(receiver: str, n_heads: int, n_kv_heads: int) -> list[str]:
    """The node(s) a receiver belongs to: a k/v input belongs to every head of its group.

    Example: ``receiver_nodes("L3H0.k", 4, 2) == ["L3H0", "L3H1"]``.
    """
    name, _, kind = receiver.partition(".")
    if not kind:
        return [receiver]
    m = NODE_RE.match(name)
    assert m is not None and m.group(1) is not None, receiver
    layer, idx = int(m.group(1)), int(m.group(2))
    if kind == "q":
        return [head_node(layer, idx)]
    rep = n_heads // n_kv_heads
    return [head_node(layer, h) for h in range(idx * rep, (idx + 1) * rep)]


def upgrade_names(value: Any) -> Any:
    """`value` (a saved record, nested lists and dicts) with version-1 node names renamed.

    Example: ``upgrade_names(["a3.0", "a3.0.k", "m1", "logits"])`` →
    ``["L3H0", "L3H0.k", "MLP1", "logits"]``.
    """
    if isinstance(value, str):
        m = _OLD_RE.match(value)
        if m is None:
            return value
        if m.group(4) is not None:
            return mlp_node(int(m.group(4)))
        return head_node(int(m.group(1)), int(m.group(2)), (m.group(3) or "").lstrip("."))
    if isinstance(value, list):
        return [upgrade_names(v) for v in value]
    if isinstance(value, dict):
        return {k: upgrade_names(v) for k, v in value.items()}
    return value
