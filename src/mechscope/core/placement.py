"""Where a model lives and in what precision: devices, dtypes and accelerate device maps.

One parser for each, shared by `load`, the vision and maze loaders and the
CLI's ``--device/--dtype/--device-map``, so a wrong value always gives the
same one line naming what is valid. `input_device` answers where a model's
inputs must go, also for a model dispatched by accelerate over several
devices and disk (its parameters may then sit on the ``meta`` device).

Example::

    parse_dtype("bf16")        # torch.bfloat16
    parse_device("cuda:1")     # ModelLoadError here: no CUDA on this machine
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Union

import torch
from torch import nn

from ..errors import ModelLoadError

DeviceMap = Union[str, dict[str, Union[str, int, torch.device]]]  # noqa: UP007 (a runtime alias)

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "float64": torch.float64,
    "fp64": torch.float64,
}
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")
_VALID_DTYPES = "auto, float32, bfloat16 (bf16), float16 (fp16), float64"


def parse_dtype(dtype: torch.dtype | str, *, allow_auto: bool = True) -> torch.dtype | str:
    """A floating torch dtype from a dtype or its name; ``"auto"`` passes through where allowed.

    Example: ``parse_dtype("bf16")`` → ``torch.bfloat16``;
    ``parse_dtype("auto", allow_auto=False)`` raises ModelLoadError.
    """
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise ModelLoadError(f"dtype must be floating, got {dtype}; valid: {_VALID_DTYPES}")
        return dtype
    if isinstance(dtype, str):
        key = dtype.strip().lower().removeprefix("torch.")
        if key == "auto" and allow_auto:
            return "auto"
        if key in DTYPES:
            return DTYPES[key]
    valid = _VALID_DTYPES if allow_auto else _VALID_DTYPES.removeprefix("auto, ")
    raise ModelLoadError(f"unknown dtype {dtype!r}; valid: {valid}")


def available_devices() -> list[str]:
    """The devices this machine has, as strings: ``cpu``, ``cuda:0`` …, ``mps``.

    Example: ``available_devices()`` → ``["cpu", "cuda:0"]`` on a machine with one GPU.
    """
    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append("mps")
    return found


def parse_device(device: str | torch.device | int) -> torch.device:
    """A torch device that exists here; anything else is one line naming the devices there are.

    Example: ``parse_device("cuda:0")`` → ``device(type='cuda', index=0)`` where there is a GPU;
    on a CPU-only machine it raises ModelLoadError "…; valid here: cpu".
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ModelLoadError(
            f"invalid device {device!r}; valid here: {', '.join(available_devices())}"
        ) from None
    here = available_devices()
    if dev.type == "cpu":
        return dev
    name = dev.type if dev.index is None or dev.type == "mps" else f"{dev.type}:{dev.index}"
    if name == "cuda" and any(d.startswith("cuda:") for d in here):
        return dev
    if name not in here:
        raise ModelLoadError(
            f"device {str(device)!r} is not available on this machine; valid here: {', '.join(here)}"
        )
    return dev


def parse_device_map(device_map: DeviceMap | None) -> DeviceMap | None:
    """An accelerate device map: one of its strategy names, or a dict from module path to a place.

    Example: ``parse_device_map({"model.layers.0": 0, "lm_head": "cpu"})`` → the same dict,
    checked; ``parse_device_map("auto")`` → ``"auto"``.
    """
    if device_map is None:
        return None
    if isinstance(device_map, str):
        if device_map in DEVICE_MAPS:
            return device_map
        raise ModelLoadError(
            f"unknown device map {device_map!r}; valid: {', '.join(DEVICE_MAPS)}, or a dict "
            "from module path to 'cpu', 'disk', a GPU index or device"
        )
    if not isinstance(device_map, dict) or not device_map:
        raise ModelLoadError(
            f"device_map must be a strategy name or a non-empty dict, got {device_map!r}"
        )
    out: dict[str, str | int | torch.device] = {}
    for module, place in device_map.items():
        if place in ("disk", "cpu") or isinstance(place, int):
            out[module] = place
        else:
            out[module] = parse_device(place)
    return out


@dataclasses.dataclass(frozen=True)
class Placement:
    """Device, dtype and optional device map for loading one model.

    Example: ``Placement.of("bf16", "cpu", None, None, default_cache_dir()).hf_kwargs()``
    → ``{"dtype": torch.bfloat16}``.
    """

    dtype: torch.dtype | str  # a floating dtype, or "auto"
    device: torch.device
    device_map: DeviceMap | None = None
    offload_folder: Path | None = None

    @classmethod
    def of(
        cls,
        dtype: torch.dtype | str,
        device: str | torch.device,
        device_map: DeviceMap | None,
        offload_folder: str | os.PathLike[str] | None,
        cache_dir: Path,
    ) -> Placement:
        """Check every part; the offload folder defaults to ``cache_dir/offload``."""
        dmap = parse_device_map(device_map)
        folder = Path(offload_folder) if offload_folder else None
        if dmap is not None and folder is None:
            folder = cache_dir / "offload"
        return cls(parse_dtype(dtype), parse_device(device), dmap, folder)

    def hf_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of `from_pretrained` for this placement."""
        kwargs: dict[str, Any] = {"dtype": self.dtype}
        if self.device_map is not None:
            kwargs["device_map"] = self.device_map
            assert self.offload_folder is not None
            self.offload_folder.mkdir(parents=True, exist_ok=True)
            kwargs["offload_folder"] = str(self.offload_folder)
        return kwargs

    def record(self) -> dict[str, Any]:
        """What a run record stores of it (JSON)."""
        dmap = self.device_map
        if isinstance(dmap, dict):
            dmap = {k: str(v) for k, v in dmap.items()}
        return {"device": str(self.device), "dtype": str(self.dtype), "device_map": dmap}


def module_device(module: nn.Module) -> torch.device:
    """Where `module` computes: accelerate's execution device if dispatched, else its first tensor's.

    Example: ``module_device(model.hf.get_submodule("lm_head"))`` → ``device(type='cpu')``.
    """
    hook = getattr(module, "_hf_hook", None)
    execution = getattr(hook, "execution_device", None)
    if execution is not None:
        return torch.device(execution)
    for tensor in (*module.parameters(), *module.buffers()):
        if tensor.device.type != "meta":
            return tensor.device
    return torch.device("cpu")


def model_dtype(module: nn.Module) -> torch.dtype:
    """The dtype of the first floating parameter (float32 for a module without one).

    Example: ``model_dtype(model.hf)`` → ``torch.float32`` for ``mechscope.load()``'s default.
    """
    for p in module.parameters():
        if p.dtype.is_floating_point:
            return p.dtype
    return torch.float32


def memory_room(device: torch.device | str) -> int | None:
    """Bytes free on a CUDA `device`, or the machine's physical memory for any other; None
    where it cannot be known (what size guards compare a job's need against).

    Example: ``memory_room("cpu")`` → 25884786688 on a 24 GiB machine.
    """
    device = torch.device(device)
    try:
        if device.type == "cuda":
            return int(torch.cuda.mem_get_info(device)[0])
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError, RuntimeError):  # not known here: no guard
        return None
