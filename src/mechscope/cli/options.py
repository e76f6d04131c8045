"""Option values shared by several commands: number lists, and where a model runs."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import torch
import typer

from ..core.placement import DEVICE_MAPS, DeviceMap, parse_device, parse_device_map, parse_dtype
from ..errors import InputError


def numbers(spec: str) -> list[int]:
    """``"0-3,7"`` → [0, 1, 2, 3, 7]: numbers and inclusive ranges, comma-separated.

    Empty parts are skipped; anything else that is not a number, and a range that runs
    backwards ("5-2"), raises ValueError.
    """
    out: list[int] = []
    for part in spec.split(","):
        if "-" in part:
            a, b = part.split("-")
            if int(a) > int(b):
                raise ValueError(f"the range {part!r} runs backwards")
            out += range(int(a), int(b) + 1)
        elif part.strip():
            out.append(int(part))
    return out


def floats(spec: str, option: str) -> list[float]:
    """``"0.5,-1"`` → [0.5, -1.0]; empty parts are skipped, anything else is an InputError naming `option`."""
    try:
        values = [float(p) for p in spec.split(",") if p.strip()]
    except ValueError:
        raise InputError(f"{option} takes numbers separated by commas, got {spec!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise InputError(f"{option} takes finite numbers, got {spec!r}")
    return values


# --- where a command's model runs: --device, --dtype, --device-map ------------------------------


@dataclasses.dataclass(frozen=True)
class Placement:
    """The checked ``--device/--dtype/--device-map`` of one command, to load its models with."""

    device: str = "cpu"
    dtype: str = "float32"
    device_map: DeviceMap | None = None

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments of `mechscope.load` (and of the vision and maze loaders' subset)."""
        return {"device": self.device, "dtype": self.dtype, "device_map": self.device_map}

    def load(self, spec: str) -> Any:
        """`mechscope.load(spec)` placed as the command was told."""
        from .. import load

        return load(spec, **self.kwargs())

    @property
    def torch_device(self) -> torch.device:
        return parse_device(self.device)

    @property
    def torch_dtype(self) -> torch.dtype:
        """The dtype as a torch dtype ("auto" is float32 for models built here, not loaded)."""
        dtype = parse_dtype(self.dtype)
        return torch.float32 if isinstance(dtype, str) else dtype


def device_map_option(text: str | None) -> DeviceMap | None:
    """``--device-map``: a strategy (auto, balanced, sequential), a JSON object, or a JSON file."""
    if text is None or not text.strip():
        return None
    text = text.strip()
    if text.startswith("{"):
        source, raw = "--device-map", text
    elif text in DEVICE_MAPS:
        return text
    else:
        path = Path(text)
        if not path.is_file():
            raise InputError(
                f"--device-map takes {', '.join(DEVICE_MAPS)}, a JSON object or a JSON file; "
                f"got {text!r}"
            )
        source = str(path)
        try:
            raw = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"cannot read --device-map file {source}: {e}") from None
    try:
        value = json.loads(raw)
    except ValueError as e:
        raise InputError(f"--device-map {source} is not valid JSON: {e}") from None
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise InputError(
            f"--device-map {source} must be a JSON object from module path to a device or 'disk'"
        )
    return parse_device_map(value)


def placed(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give a typer command the shared ``--device/--dtype/--device-map`` options.

    The command takes one keyword argument ``place`` (a checked `Placement`)
    instead of three options, so every command spells, checks and records
    them the same way. A wrong value is one line naming what is valid.

    Example::

        @placed
        def run(model: str = MODEL_ARG, *, place: Placement) -> None:
            m = place.load(model)
    """
    signature = inspect.signature(command)
    params = [p for p in signature.parameters.values() if p.name != "place"]
    kw = inspect.Parameter.KEYWORD_ONLY
    extra = [
        inspect.Parameter("device", kw, default=_DEVICE, annotation=str),
        inspect.Parameter("dtype", kw, default=_DTYPE, annotation=str),
        inspect.Parameter("device_map", kw, default=_DEVICE_MAP, annotation=Optional[str]),  # noqa: UP045
    ]

    @functools.wraps(command)
    def wrapper(*args: Any, device: str, dtype: str, device_map: str | None, **kwargs: Any) -> Any:
        parse_device(device)
        parse_dtype(dtype)
        place = Placement(device, dtype, device_map_option(device_map))
        return command(*args, place=place, **kwargs)

    wrapper.__signature__ = signature.replace(parameters=[*params, *extra])  # type: ignore[attr-defined]
    wrapper.__annotations__ = {k: v for k, v in command.__annotations__.items() if k != "place"}
    return wrapper


_DEVICE = typer.Option("cpu", "--device", help="Where the model runs: cpu, cuda, cuda:N, mps.")
_DTYPE = typer.Option(
    "float32",
    "--dtype",
    help="Precision: float32, bfloat16 (bf16), float16 (fp16), or auto (the checkpoint's).",
)
_DEVICE_MAP = typer.Option(
    None,
    "--device-map",
    help="Dispatch the model with accelerate: auto, balanced, sequential, or a JSON object "
    "(or file) from module path to a device or 'disk'.",
)


# --- where a command's sharded work runs: --engine, --address, --workers -----------------------


@dataclasses.dataclass(frozen=True)
class EngineChoice:
    """The checked ``--engine/--address/--workers`` of one command."""

    engine: str = "local"
    address: str | None = None
    workers: int | None = None

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the library calls that take an engine."""
        return {"engine": self.engine, "address": self.address, "workers": self.workers}


def engined(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give a typer command the shared ``--engine/--address/--workers`` options.

    The command takes one keyword argument ``engine`` (a checked
    `EngineChoice`), checked before any model loads: a wrong combination is
    one line, exit 2. Put it below `placed`.

    Example::

        @placed
        @engined
        def harvest(model: str = MODEL_ARG, *, place: Placement, engine: EngineChoice) -> None:
            harvest(place.load(model), ..., **engine.kwargs())
    """
    signature = inspect.signature(command)
    params = [p for p in signature.parameters.values() if p.name != "engine"]
    kw = inspect.Parameter.KEYWORD_ONLY
    extra = [
        inspect.Parameter("engine", kw, default=_ENGINE, annotation=str),
        inspect.Parameter("address", kw, default=_ADDRESS, annotation=Optional[str]),  # noqa: UP045
        inspect.Parameter("workers", kw, default=_WORKERS, annotation=Optional[int]),  # noqa: UP045
    ]

    @functools.wraps(command)
    def wrapper(
        *args: Any, engine: str, address: str | None, workers: int | None, **kw: Any
    ) -> Any:
        from ..engine import check_engine

        check_engine(engine, address=address, workers=workers)
        return command(*args, engine=EngineChoice(engine, address, workers), **kw)

    # keyword-only parameters must stay after the positional-or-keyword ones typer reads first
    ordered = sorted([*params, *extra], key=lambda p: p.kind)
    wrapper.__signature__ = signature.replace(parameters=ordered)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {k: v for k, v in command.__annotations__.items() if k != "engine"}
    return wrapper


_ENGINE = typer.Option(
    "local", "--engine", help="Where the work runs: local (this process) or ray (a Ray cluster)."
)
_ADDRESS = typer.Option(
    None, "--address", help="With --engine ray: the cluster to join (default: start a local one)."
)
_WORKERS = typer.Option(
    None, "--workers", help="With --engine ray: tasks at once (default: the cluster's CPUs)."
)
