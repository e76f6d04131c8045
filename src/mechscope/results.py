"""The one result contract: every technique's result is a frozen dataclass on `Result`.

A result's fields are arrays (torch tensors, or numpy arrays when loaded without
torch) and JSON values (numbers, strings, lists, tuples, dicts, nested plain
dataclasses). `save(path)` writes one safetensors file: the arrays as tensors and
one JSON record, with the class's format tag (``"mechscope.patch/1"``), in the
file's metadata; the write is atomic (a temporary file renamed into place).
`load(path)` gives back an equal object; `load(path, arrays="numpy")` does so
without importing torch, for readers that need no model (the viewer). The
arrays and the safetensors files themselves are `mechscope._arrays`' part.

One `summary()` drives the repr, the rich rendering in a terminal and the HTML
in a notebook, so the CLI, the tour and notebooks print results themselves.

Example::

    result = patch_sweep(...)            # a PatchResult
    path = result.save("runs/x/patch")   # runs/x/patch.safetensors
    again = PatchResult.load(path)       # equal fields
    open_result(path, arrays="numpy")    # the same, numpy arrays, no torch
"""

from __future__ import annotations

import dataclasses
import html
import importlib
import json
import math
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

import numpy as np

from ._arrays import as_numpy, is_array, read_header, read_safetensors, write_safetensors
from .errors import InputError

try:
    from typing import dataclass_transform
except ImportError:  # Python 3.10
    from typing_extensions import dataclass_transform

if TYPE_CHECKING:
    from rich.console import RenderableType

R = TypeVar("R", bound="Result")
Arrays = Literal["torch", "numpy"]

SUFFIX = ".safetensors"

# Every format tag and the class that reads it ("module:Class", imported on demand so
# that opening one result imports one technique's module, and no torch for numpy loads).
FORMATS: dict[str, str] = {
    "mechscope.patch/1": "mechscope.patching.results:PatchResult",
    "mechscope.attribution_patching/1": "mechscope.patching.results:AttributionPatching",
    "mechscope.edge_scores/2": "mechscope.patching.results:EdgeScores",
    "mechscope.circuit/2": "mechscope.patching.results:Circuit",
    "mechscope.ioi_dataset/1": "mechscope.ioi.results:IOIDataset",
    "mechscope.head_scores/1": "mechscope.ioi.results:HeadScores",
    "mechscope.ioi_attention/1": "mechscope.ioi.results:IOIAttentionScores",
    "mechscope.head_classes/1": "mechscope.ioi.results:HeadClassification",
    "mechscope.causal_trace/1": "mechscope.tracing.results:CausalTrace",
    "mechscope.average_trace/1": "mechscope.tracing.results:AverageTrace",
    "mechscope.rome_edit/1": "mechscope.tracing.edits:Edit",
    "mechscope.edit_report/1": "mechscope.tracing.edits:EditReport",
    "mechscope.direction/1": "mechscope.probes.results:LinearDirection",
    "mechscope.probe_results/1": "mechscope.probes.results:ProbeResults",
    "mechscope.probe_pairs/1": "mechscope.probes.results:ProbePairs",
    "mechscope.steering_vector/1": "mechscope.steering.results:SteeringVector",
    "mechscope.steering_sweep/1": "mechscope.steering.results:SteeringSweep",
    "mechscope.steering_examples/1": "mechscope.steering.results:SteeringExamples",
    "mechscope.prompt_comparisons/1": "mechscope.prompts_results:PromptComparisons",
    "mechscope.sae_eval/1": "mechscope.sae.results:SAEEval",
    "mechscope.transcoder_eval/1": "mechscope.transcoders.results:TranscoderEval",
    "mechscope.attribution_graph/1": "mechscope.graphs.results:AttributionGraph",
    "mechscope.graph_check/1": "mechscope.graphs.validate:GraphCheck",
    "mechscope.toy/1": "mechscope.sae.results:ToyResult",
    "mechscope.unit/1": "mechscope.harvest.results:UnitRecord",
    "mechscope.explain_summary/1": "mechscope.autointerp.results:ExplainSummary",
    "mechscope.rendering/1": "mechscope.vision.results:Rendering",
    "mechscope.conv_weights/1": "mechscope.weights.results:ConvWeights",
    "mechscope.neuron_wiring/1": "mechscope.weights.results:NeuronWiring",
    "mechscope.copying_scores/1": "mechscope.weights.results:CopyingScores",
    "mechscope.head_circuits/1": "mechscope.weights.results:HeadCircuits",
    "mechscope.mazes/1": "mechscope.maze.results:Mazes",
    "mechscope.vector_field/1": "mechscope.maze.results:VectorField",
    "mechscope.behaviour/1": "mechscope.maze.results:Behaviour",
    "mechscope.decision_effect/1": "mechscope.maze.results:DecisionEffect",
    "mechscope.cheese_channels/1": "mechscope.maze.results:CheeseChannels",
    "mechscope.retargeting/1": "mechscope.maze.results:Retargeting",
    "mechscope.maze_curve/1": "mechscope.maze.reports:TrainingCurve",
    "mechscope.behaviour_report/1": "mechscope.maze.reports:BehaviourReport",
    "mechscope.steer_report/1": "mechscope.maze.reports:SteerReport",
    "mechscope.sae_history/1": "mechscope.sae.results:TrainingHistory",
}


class ResultFormatError(InputError):
    """A file that is not the result asked for (another format, or not a result at all).

    Example: ``open_result("runs/x/config.json")`` raises it (not a safetensors result file), as
    does ``PatchResult.load`` on a file holding a ``mechscope.causal_trace/1``.
    """


# --- the JSON record: values tagged so that loading needs no type hints ----------------

_TUPLE, _DICT, _ARRAY, _DATACLASS = "__tuple__", "__items__", "__array__", "__dataclass__"


def _encode(value: Any, key: str, arrays: dict[str, Any]) -> Any:
    if is_array(value):
        arrays[key] = value
        return {_ARRAY: key}
    if isinstance(value, Result):
        raise TypeError(f"{key}: a result inside a result; save it on its own")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {
            f.name: _encode(getattr(value, f.name), f"{key}.{f.name}", arrays)
            for f in dataclasses.fields(value)
        }
        return {_DATACLASS: type(value).__name__, "fields": fields}
    if isinstance(value, tuple):
        return {_TUPLE: [_encode(v, f"{key}.{i}", arrays) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, f"{key}.{i}", arrays) for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        if all(isinstance(k, str) for k in value):
            return {k: _encode(v, f"{key}.{k}", arrays) for k, v in value.items()}
        return {
            _DICT: [[k, _encode(v, f"{key}.{k}", arrays)] for k, v in value.items()],
        }
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"{key}: cannot save a {type(value).__name__} in a result")


def _decode(value: Any, arrays: Mapping[str, Any], owner: type) -> Any:
    if isinstance(value, list):
        return [_decode(v, arrays, owner) for v in value]
    if not isinstance(value, dict):
        return value
    if _ARRAY in value and len(value) == 1:
        return arrays[value[_ARRAY]]
    if _TUPLE in value and len(value) == 1:
        return tuple(_decode(v, arrays, owner) for v in value[_TUPLE])
    if _DICT in value and len(value) == 1:
        return {_key(k): _decode(v, arrays, owner) for k, v in value[_DICT]}
    if _DATACLASS in value and set(value) == {_DATACLASS, "fields"}:
        cls = _nested_class(owner, value[_DATACLASS])
        return cls(**{k: _decode(v, arrays, owner) for k, v in value["fields"].items()})
    return {k: _decode(v, arrays, owner) for k, v in value.items()}


def _key(k: Any) -> Any:
    return tuple(k) if isinstance(k, list) else k


def _nested_class(owner: type, name: str) -> type:
    """A dataclass named in a record: only one of the owning result's module (no imports
    named by a file)."""
    cls = getattr(sys.modules[owner.__module__], name, None)
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise ResultFormatError(f"a saved {owner.__name__} names an unknown part {name!r}")
    return cls


# --- the base ---

T = TypeVar("T", bound=type)


@dataclass_transform(frozen_default=True)
def result(cls: T) -> T:
    """Make `cls` (a `Result` subclass) a frozen dataclass whose repr and equality are
    the base's (`summary()`; fields equal, arrays compared by value).

    Example::

        @result
        class Scores(Result):      # without a format tag in FORMATS, open_result cannot name it
            values: Tensor
    """
    return dataclasses.dataclass(frozen=True, repr=False, eq=False)(cls)  # type: ignore[return-value]


def unsaved() -> Any:
    """A field that is not saved (runtime state: a model handle, a cache); it must have a
    default, which `load` gives back.

    Example: ``model: Any = unsaved()`` as a field of a `result` class: `save` skips it and `load`
    gives None.
    """
    return dataclasses.field(default=None, metadata={"save": False}, compare=False)


# --------------------------------------------------------------------------


class Result:
    """Base of every result dataclass: `save`, `load`, `summary` and the reprs.

    A subclass is a frozen dataclass that sets ``format = "mechscope.<kind>/<version>"``
    and writes `summary()`; it may override `_upgrade(record, found)` to read older
    versions of its format.

    Example::

        trace = open_result("runs/trace/trace.safetensors")   # a CausalTrace, a Result
        print(trace.summary())
        trace.save("elsewhere/trace")                          # elsewhere/trace.safetensors
    """

    format: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        fmt = cls.__dict__.get("format")
        if fmt and FORMATS.get(fmt) != f"{cls.__module__}:{cls.__qualname__}":
            raise TypeError(f"{cls.__qualname__}: format {fmt!r} is not in results.FORMATS")

    # saving and loading

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write this result to `path` (``.safetensors`` added when missing); the path."""
        path = with_suffix(path)
        arrays: dict[str, Any] = {}
        record = {
            f.name: _encode(getattr(self, f.name), f.name, arrays)
            for f in dataclasses.fields(self)  # type: ignore[arg-type]
            if f.metadata.get("save", True)
        }
        # one metadata entry: safetensors keeps metadata in a hash map whose order changes
        # from process to process, and the same result must give the same bytes
        meta = {"mechscope": json.dumps({"format": self.format, "record": record})}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_safetensors(path, arrays, meta)
        except OSError as e:
            raise InputError(f"cannot write {type(self).__name__} to {path}: {e}") from None
        return path

    @classmethod
    def load(cls: type[R], path: str | os.PathLike[str], *, arrays: Arrays = "torch") -> R:
        """Reopen a result written by `save`; ``arrays="numpy"`` needs no torch.

        Example::

            trace = CausalTrace.load("runs/trace/trace.safetensors")
        """
        fmt, record, data = _read(path, arrays)
        # everything below reads what the file says: any failure is the file's, named by it
        try:
            if fmt != cls.format:
                record = cls._upgrade(record, fmt, path)
            values = {k: _decode(v, data, cls) for k, v in record.items()}
        except ResultFormatError as e:
            raise ResultFormatError(_naming(path, e)) from None
        except Exception as e:  # a reference to a missing array, a malformed tagged value
            raise ResultFormatError(
                f"{path}: a damaged {fmt or 'result'} record ({_one_line(e)})"
            ) from None
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
        unknown = set(values) - set(fields)
        if unknown:
            raise ResultFormatError(
                f"{path}: a {fmt} record with fields {sorted(unknown)} that "
                f"{cls.__name__} does not have"
            )
        for name, value in values.items():
            annotation = _annotation(fields[name].type)
            if not _fits(annotation, value, cls):
                raise ResultFormatError(
                    f"{path}: field {name!r} of a {cls.format} record should be {annotation}, "
                    f"got {type(value).__name__}"
                )
        try:
            return cls(**values)
        except TypeError as e:
            raise ResultFormatError(
                f"{path}: not a complete {cls.format} record ({_one_line(e)})"
            ) from None
        except Exception as e:  # a class's own checks of its fields
            raise ResultFormatError(f"{path}: {_one_line(e)}") from None

    @classmethod
    def _upgrade(cls, record: dict[str, Any], found: str, path: object) -> dict[str, Any]:
        """The record of an older format, as this version's fields (default: refuse)."""
        raise ResultFormatError(
            f"{path} holds {found or 'no result format'}, not {cls.format} ({cls.__name__})"
        )

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and fields_equal(self, other)

    __hash__ = None  # type: ignore[assignment]

    # showing

    def summary(self) -> str:
        """One or a few lines on what the result says (the repr, the terminal, notebooks)."""
        parts = []
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            if isinstance(v, (int, float, str)) and not isinstance(v, bool):
                parts.append(f"{f.name}={_short(v)}")
            elif is_array(v):
                parts.append(f"{f.name}[{'×'.join(map(str, v.shape))}]")
        return ", ".join(parts)

    def __repr__(self) -> str:
        lines = self.summary().splitlines() or [""]
        body = lines[0] if len(lines) == 1 else "\n  " + "\n  ".join(lines) + "\n"
        return f"{type(self).__name__}({body})"

    def __rich__(self) -> RenderableType:
        from rich.panel import Panel
        from rich.text import Text

        return Panel(
            Text(self.summary()), title=type(self).__name__, title_align="left", expand=False
        )

    def figure_html(self) -> str | None:
        """The result's interactive figure as an HTML fragment, for notebooks (or None)."""
        return None

    def _repr_html_(self) -> str:
        figure = self.figure_html() or ""
        return (
            f"<div class='mechscope-result'><b>{html.escape(type(self).__name__)}</b>"
            f"<pre>{html.escape(self.summary())}</pre>{figure}</div>"
        )


def _one_line(e: BaseException) -> str:
    """An exception's message on one line (some libraries' span several)."""
    return " ".join(str(e).split()) or type(e).__name__


def _naming(path: object, e: BaseException) -> str:
    message = _one_line(e)
    return message if str(path) in message else f"{path}: {message}"


def _annotation(t: object) -> str:
    return t if isinstance(t, str) else getattr(t, "__name__", "")


_ARRAY_TYPES = {"Array", "Tensor", "ndarray", "np.ndarray", "Float", "Int", "Bool", "Num"}
_PLAIN_TYPES: dict[str, Any] = {
    "None": lambda v: v is None,
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "bool": lambda v: isinstance(v, bool),
    "list": lambda v: isinstance(v, list),
    "tuple": lambda v: isinstance(v, tuple),
    "dict": lambda v: isinstance(v, dict),
}


def _alternatives(annotation: str) -> list[str]:
    """The members of a union annotation, split at its top-level ``|``."""
    out, depth, start = [], 0, 0
    for i, ch in enumerate(annotation):
        depth += ch == "["
        depth -= ch == "]"
        if ch == "|" and depth == 0:
            out.append(annotation[start:i])
            start = i + 1
    return [a.strip() for a in [*out, annotation[start:]]]


def _fits(annotation: str, value: Any, owner: type) -> bool:
    """Whether a loaded value can be a field annotated `annotation` (its outer type only;
    names that are not plain types, arrays or the owner's dataclasses are not judged)."""
    for alt in _alternatives(annotation):
        base = alt.split("[", 1)[0].strip()
        if base in _ARRAY_TYPES:
            fits = is_array(value)
        elif base in _PLAIN_TYPES:
            fits = _PLAIN_TYPES[base](value)
        else:
            part = getattr(sys.modules[owner.__module__], base, None)
            if not (isinstance(part, type) and dataclasses.is_dataclass(part)):
                return True  # Any, object, a Literal…: nothing to check
            fits = isinstance(value, part)
        if fits:
            return True
    return False


def _short(v: int | float | str) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    if isinstance(v, str) and len(v) > 40:
        return repr(v[:37] + "…")
    return repr(v) if isinstance(v, str) else str(v)


def with_suffix(path: str | os.PathLike[str]) -> Path:
    """`path` ending in ``.safetensors``.

    Example: ``with_suffix("runs/x/patch")`` → ``Path("runs/x/patch.safetensors")``; a path ending
    in ``.safetensors`` is kept as it is.
    """
    path = Path(path)
    return path if path.suffix == SUFFIX else path.with_name(path.name + SUFFIX)


def _resolve(path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    if not path.exists() and with_suffix(path).exists():
        path = with_suffix(path)
    if path.is_dir():
        raise ResultFormatError(f"{path} is a folder, not a saved result (a .safetensors file)")
    if not path.exists():
        raise ResultFormatError(f"no saved result at {path}")
    return path


def _read(path: str | os.PathLike[str], arrays: Arrays) -> tuple[str, dict[str, Any], Any]:
    path = _resolve(path)
    try:
        if arrays == "numpy":
            meta, data = read_safetensors(path)
        else:
            from safetensors import safe_open

            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
                data = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
        entry = _entry(meta)
    except Exception as e:
        raise ResultFormatError(f"{path} is not a readable result file ({_one_line(e)})") from None
    record = entry.get("record")
    if not isinstance(record, dict):
        record = {"__legacy__": dict(meta)}
    return str(entry.get("format", "")), record, data


def _entry(meta: Mapping[str, str]) -> dict[str, Any]:
    """The ``{"format", "record"}`` entry of a result file's metadata ({} if it has none)."""
    raw = meta.get("mechscope")
    if raw is None:
        return {}
    entry = json.loads(raw)
    if not isinstance(entry, dict):
        raise ValueError("its mechscope metadata is not a JSON object")
    return entry


def result_class(fmt: str) -> type[Result]:
    """The class that reads format tag `fmt`.

    Example: ``result_class("mechscope.patch/1")`` → ``PatchResult`` (its module imported now).
    """
    if fmt not in FORMATS:
        known = ", ".join(sorted(FORMATS))
        raise ResultFormatError(f"unknown result format {fmt!r}; known: {known}")
    module, name = FORMATS[fmt].split(":")
    return getattr(importlib.import_module(module), name)


def open_result(path: str | os.PathLike[str], *, arrays: Arrays = "torch") -> Result:
    """Reopen any saved result, whatever its class (named by the file's format tag).

    Example::

        open_result("runs/patch/patch.safetensors")   # PatchResult(…)
    """
    resolved = _resolve(path)
    fmt = str(result_header(resolved).get("format", ""))
    if not fmt:
        raise ResultFormatError(f"{resolved} holds no result format tag")
    try:
        cls = result_class(fmt)
    except ResultFormatError as e:
        raise ResultFormatError(_naming(resolved, e)) from None
    return cls.load(resolved, arrays=arrays)


def result_header(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``format`` tag and record of a result file, read without its arrays ({} for a
    safetensors file that is not a result).

    Example: ``result_header("runs/patch/patch.safetensors")["format"]``
    → ``"mechscope.patch/1"``.
    """
    try:
        return _entry(read_header(Path(path))[0])
    except Exception as e:
        raise ResultFormatError(f"{path} is not a readable result file ({_one_line(e)})") from None


def fields_equal(a: Any, b: Any) -> bool:
    """Two results (or values) equal field by field, arrays compared as numpy.

    Example: ``fields_equal({"a": torch.ones(2)}, {"a": np.ones(2)})`` → True.
    """
    if is_array(a) or is_array(b):
        if not (is_array(a) and is_array(b)):
            return False
        x, y = as_numpy(a), as_numpy(b)
        return x.shape == y.shape and bool(np.array_equal(x, y, equal_nan=x.dtype.kind == "f"))
    if dataclasses.is_dataclass(a) and dataclasses.is_dataclass(b):
        if type(a) is not type(b):
            return False
        return all(
            fields_equal(getattr(a, f.name), getattr(b, f.name))
            for f in dataclasses.fields(a)  # type: ignore[arg-type]
            if f.metadata.get("save", True)
        )
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(fields_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(fields_equal, a, b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b
