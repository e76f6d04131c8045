"""The ``mechscope`` command line: thin typer commands over the library.

User mistakes (a wrong site, a missing model package) print one red line and
exit with status 2; no traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..display import top_tokens
from ..errors import InputError, MechscopeError
from .options import EngineChoice, Placement, engined, placed
from .serve import serve as serve_cmd

app = typer.Typer(
    name="mechscope",
    help="A workbench for mechanistic interpretability.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
errors = Console(stderr=True, soft_wrap=True)

MODEL_ARG = typer.Argument(
    ..., help="Built-in name (smollm2-135m), HF folder, .gguf file, or hub id."
)


@app.command()
def models() -> None:
    """List the built-in models and the models converted into the cache."""
    from ..core.loading import BUILTIN_MODELS, default_cache_dir, list_cached

    table = Table(title="built-in models")
    table.add_column("name")
    table.add_column("what")
    table.add_column("package")
    table.add_column("installed")
    for name, b in BUILTIN_MODELS.items():
        table.add_row(name, b.description, b.package, "yes" if b.installed() else "no")
    console.print(table)
    cached = list_cached()
    if cached:
        t2 = Table(title=f"converted and cached under {default_cache_dir()}")
        t2.add_column("folder")
        t2.add_column("source")
        for entry in cached:
            t2.add_row(str(entry.get("path", "")), str(entry.get("source", "")))
        console.print(t2)


@app.command()
@placed
def sites(
    model: str = MODEL_ARG,
    pattern: str = typer.Option(None, "--pattern", "-p", help="Glob, e.g. 'blocks.3.*'."),
    all_blocks: bool = typer.Option(False, "--all", help="List every block, not only block 0."),
    *,
    place: Placement,
) -> None:
    """List a model's sites with their shapes."""

    m = place.load(model)
    console.print(repr(m))
    listed = m.sites(pattern)
    n_layers = m.dims.n_layers if m.dims else 0
    if pattern is None and not all_blocks and n_layers > 1:
        listed = [s for s in listed if s.layer in (None, 0)]
    table = Table()
    table.add_column("site")
    table.add_column("shape")
    table.add_column("what")
    for s in listed:
        table.add_row(s.name, s.shape, s.doc)
    console.print(table)
    if pattern is None and not all_blocks and n_layers > 1:
        console.print(f"… and the same for blocks.1 … blocks.{n_layers - 1} (--all lists them)")


@app.command()
@placed
def run(
    model: str = MODEL_ARG,
    prompt: str = typer.Argument(..., help="The text to run."),
    top: int = typer.Option(10, "--top", help="How many next tokens to show."),
    save: list[str] = typer.Option([], "--save", help="Site or glob to cache (repeatable)."),
    out: Path = typer.Option(None, "--out", help="Write the cache to FILE.safetensors."),
    bos: bool = typer.Option(
        None,
        "--bos/--no-bos",
        help="Force a BOS token first, or none (default: the tokenizer's rule).",
    ),
    *,
    place: Placement,
) -> None:
    """Run a prompt: top next tokens, and the cached sites' shapes (optionally saved)."""

    if out is not None and not save:
        raise MechscopeError("--out writes the cached sites: give --save SITE (or a glob) too")
    if out is not None and out.suffix != ".safetensors":
        raise MechscopeError(f"--out must end in .safetensors, got {out}")
    if top < 1:
        raise MechscopeError(f"--top must be at least 1, got {top}")
    if not prompt:
        raise MechscopeError("the prompt is empty: give the text to run")
    m = place.load(model)
    if m.dims is not None and top > m.dims.d_vocab:
        raise MechscopeError(
            f"--top must be at most the vocabulary size {m.dims.d_vocab}, got {top}"
        )
    result = m.run(prompt, save=save, prepend_bos=bos)
    console.print(top_tokens(m, prompt, result.logits[0, -1], top))
    if save:
        print_cache(result.cache)
    if out is not None:
        path = result.cache.save(out)
        console.print(f"saved {len(result.cache)} sites to {path}")


def print_cache(cache) -> None:
    table = Table(title="cached sites")
    table.add_column("site")
    table.add_column("shape")
    for name, value in cache.items():
        table.add_row(name, str(tuple(value.shape)))
    console.print(table)


@app.command()
@placed
@engined
def ioi(
    model: str = typer.Argument("smollm2-135m", help="Model spec (default: the built-in SmolLM2)."),
    prompts: int = typer.Option(
        100, "--prompts", help="IOI prompts for the logit difference and scores."
    ),
    sweep_prompts: int = typer.Option(
        16, "--sweep-prompts", help="Prompts per patching experiment."
    ),
    threshold: float = typer.Option(
        0.025, "--threshold", help="ACDC pruning threshold (normalised)."
    ),
    resid_prompts: int = typer.Option(
        4, "--resid-prompts", help="Prompts per resid_pre sweep patch."
    ),
    seed: int = typer.Option(0, "--seed"),
    out: Path = typer.Option(Path("runs/ioi"), "--out", help="Run folder to write."),
    *,
    place: Placement,
    engine: EngineChoice,
) -> None:
    """Reproduce the IOI circuit analysis (Wang et al. 2022) on a model; write a run folder."""
    from ..ioi.reproduce import ioi_run

    m = place.load(model)
    ioi_run(
        m,
        out,
        n_prompts=prompts,
        sweep_prompts=sweep_prompts,
        resid_prompts=resid_prompts,
        threshold=threshold,
        seed=seed,
        console=console,
        **engine.kwargs(),
    )


@app.command()
@placed
def tour(
    model: str = typer.Option("smollm2-135m", "--model", help="Which model to tour."),
    *,
    place: Placement,
) -> None:
    """The main job: a guided run of mechscope's techniques on the default model."""
    from ..tour import run_tour

    run_tour(model, console, **place.kwargs())


app.command()(serve_cmd)


from .explain import explain_cmd  # noqa: E402
from .graph import graph_cmd  # noqa: E402
from .harvest import harvest_cmd, merge_cmd  # noqa: E402
from .maze import maze_app  # noqa: E402
from .sae import sae_app  # noqa: E402
from .steer import probe_cmd, steer_cmd, steer_sweep_cmd  # noqa: E402
from .toy import toy_cmd  # noqa: E402
from .trace import edit_cmd, trace_cmd  # noqa: E402
from .transcoders import transcoders_app  # noqa: E402
from .viz import viz_cmd  # noqa: E402
from .weights import weights_app  # noqa: E402

app.command("harvest")(harvest_cmd)
app.command("merge-harvests")(merge_cmd)
app.command("explain")(explain_cmd)
app.command("graph")(graph_cmd)
app.command("toy")(toy_cmd)
app.command("trace")(trace_cmd)
app.command("edit")(edit_cmd)
app.command("probe")(probe_cmd)
app.command("steer")(steer_cmd)
app.command("steer-sweep")(steer_sweep_cmd)
app.command("viz")(viz_cmd)
app.add_typer(sae_app, name="sae")
app.add_typer(transcoders_app, name="transcoders")
app.add_typer(weights_app, name="weights")
app.add_typer(maze_app, name="maze")


def _check_arguments(argv: list[str]) -> None:
    """Refuse arguments that are not UTF-8 text (Python keeps their bytes as lone surrogates)."""
    for i, arg in enumerate(argv, 1):
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError as e:
            raw = arg.encode("utf-8", "surrogateescape")
            raise InputError(
                f"argument {i} is not UTF-8 text (byte 0x{raw[e.start]:02x} at {e.start}); "
                "pass text in UTF-8"
            ) from None


def main() -> None:
    """Entry point: run the app, turning user errors into one line."""
    try:
        _check_arguments(sys.argv[1:])
        code = app(standalone_mode=False)
        # typer turns Ctrl-C into Exit(130), and without standalone mode returns its code
        if code == 130:
            raise KeyboardInterrupt
        if isinstance(code, int) and code:
            sys.exit(code)
    except MechscopeError as err:
        _end_progress()
        errors.print(f"[red]error:[/red] {escape(str(err))}", highlight=False, markup=True)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        _end_progress()
        errors.print("aborted: run the same command again to resume where a run can", markup=False)
        sys.exit(130)
    except Exception as err:
        if _is_usage_error(err):  # click's (or typer's own copy of click's) usage errors
            err.show()  # type: ignore[attr-defined]
            sys.exit(err.exit_code)  # type: ignore[attr-defined]
        if isinstance(err, OSError) and err.filename is not None:  # the disk, not the code
            _end_progress()
            where = f"{err.filename}" + (f" → {err.filename2}" if err.filename2 else "")
            errors.print(
                f"[red]error:[/red] {escape(str(err.strerror or err))}: {escape(where)}",
                highlight=False,
                markup=True,
            )
            sys.exit(2)
        raise


def _end_progress() -> None:
    """Close the progress bars still drawn, so that the error line starts a line of its own."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", ())):
        bar.close()


def _is_usage_error(err: Exception) -> bool:
    import click

    if isinstance(err, click.exceptions.ClickException):
        return True
    return any(
        cls.__name__ == "ClickException" and cls.__module__.endswith("_click.exceptions")
        for cls in type(err).__mro__
    )
