"""Parsing of option values shared by several commands."""

from __future__ import annotations

from ..errors import InputError


def numbers(spec: str) -> list[int]:
    """``"0-3,7"`` → [0, 1, 2, 3, 7]: numbers and inclusive ranges, comma-separated.

    Empty parts are skipped; anything else that is not a number raises ValueError.
    """
    out: list[int] = []
    for part in spec.split(","):
        if "-" in part:
            a, b = part.split("-")
            out += range(int(a), int(b) + 1)
        elif part.strip():
            out.append(int(part))
    return out


def floats(spec: str, option: str) -> list[float]:
    """``"0.5,-1"`` → [0.5, -1.0]; empty parts are skipped, anything else is an InputError naming `option`."""
    try:
        return [float(p) for p in spec.split(",") if p.strip()]
    except ValueError:
        raise InputError(f"{option} takes numbers separated by commas, got {spec!r}") from None
