"""Converting a GGUF file into a plain HF folder in the cache, once.

transformers dequantises a GGUF checkpoint on load, but the result cannot be
saved as is: its config keeps the quantisation. The conversion rebuilds a plain
model of the same class from the dequantised state dict, checks that its
logits equal the dequantised model's on a short prompt, writes it as
safetensors with a ``mechscope.json`` record (the GGUF's sha256, the check)
under a temporary name and renames it into place, so a killed conversion
leaves nothing half-written.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import json
import os
import re
import shutil
import sys
import tempfile
import time
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

from mechscope.errors import ModelLoadError

METADATA_FILE = "mechscope.json"
_METADATA_FORMAT = 1
# The prompt on which a converted model must reproduce the GGUF model's logits exactly.
_CHECK_PROMPT = "The capital of France is"
_STALE_TMP_S = 24 * 3600


def _one_line(e: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return f"{type(e).__name__}: {lines[0] if lines else ''}"


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.").lower() or "model"


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
