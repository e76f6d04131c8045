"""Activation patching: sweeps, path patching, attribution patching and circuit discovery."""

from __future__ import annotations

from .sweep import Metric, PatchResult, activation_patching

__all__ = ["Metric", "PatchResult", "activation_patching"]
