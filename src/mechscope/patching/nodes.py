"""Node names of a circuit graph, shared by the discovery code, the result and its figure.

Heads are ``a{layer}.{head}``, MLPs ``m{layer}``, plus ``embed``, ``pos_embed``
and ``logits``; a receiver is a node or a head's ``q``/``k``/``v`` input
(``a3.0.k``).

Example: ``receiver_nodes("a3.0.k", 4, 2) == ["a3.0", "a3.1"]``.
"""

from __future__ import annotations

import re

NODE_RE = re.compile(r"^(?:a(\d+)\.(\d+)|m(\d+)|embed|pos_embed|logits)$")
"""A node name: ``a{layer}.{head}``, ``m{layer}``, ``embed``, ``pos_embed`` or ``logits``."""


def receiver_nodes(receiver: str, n_heads: int, n_kv_heads: int) -> list[str]:
    """The node(s) a receiver belongs to: a k/v input belongs to every head of its group.

    Example: ``receiver_nodes("a3.0.k", 4, 2) == ["a3.0", "a3.1"]``.
    """
    parts = receiver.split(".")
    if len(parts) == 1:
        return [receiver]
    layer, idx, kind = int(parts[0][1:]), int(parts[1]), parts[2]
    if kind == "q":
        return [f"a{layer}.{idx}"]
    rep = n_heads // n_kv_heads
    return [f"a{layer}.{h}" for h in range(idx * rep, (idx + 1) * rep)]
