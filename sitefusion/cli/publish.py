"""Commands that publish a finished run: its model card and its exported model.

Kept apart from :mod:`sitefusion.cli.main` (which registers them) so that no CLI module grows
past the house limit; the same contract holds: validate, call one library function, print a
short summary, exit non-zero with a one-line reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console

from sitefusion.errors import SiteFusionError

__all__ = ["card_cmd", "export_cmd"]

console = Console(stderr=False)
err_console = Console(stderr=True)


def _fail(err: BaseException) -> NoReturn:
    err_console.print(f"[red]error:[/] {err}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=1)


def card_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A finished run directory.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for MODEL_CARD.md and the JSON.")],
    report: Annotated[
        Path | None,
        typer.Option("--report", help="An evaluation report of this run (sitefusion evaluate)."),
    ] = None,
    about: Annotated[
        Path | None,
        typer.Option(
            "--about",
            help="YAML with what only the publisher knows: title, class_names, intended use, "
            "data_source, license.",
        ),
    ] = None,
) -> None:
    """Write the run's model card: MODEL_CARD.md (for clinicians) and model_card.json."""
    from sitefusion.card import write_model_card  # lazy: keeps --help fast

    try:
        md, js, card = write_model_card(run_dir, out, report, about=about)
    except (SiteFusionError, OSError) as err:  # OSError: a disk that fills up, say
        _fail(err)
    evaluated = "with" if card["metrics"] else "WITHOUT"
    console.print(
        f"model card of run {card['model_details']['run_id']} ({evaluated} evaluation, "
        f"{len(card['limitations'])} known limitations): {md}, {js}",
        highlight=False,
        soft_wrap=True,
    )


def export_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A finished run directory.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the exported model.")],
    format_: Annotated[str, typer.Option("--format", help="Export format; valid: onnx.")] = "onnx",
) -> None:
    """Export the fused system (experts + fusion head) as one ONNX graph with its
    pre-processing JSON and a runner that needs only numpy and onnxruntime."""
    from sitefusion.export import export_run  # lazy: keeps --help fast

    try:
        result = export_run(run_dir, out, format_=format_)
    except (SiteFusionError, OSError) as err:  # OSError: a disk that fills up, say
        _fail(err)
    console.print(
        f"exported run {result.run_id} ({result.method}) to {result.model}; checked against "
        f"PyTorch on {result.checked_images} images: max |difference| of probabilities "
        f"{result.max_abs_diff:.2e}; run it with: python {result.runner} IMAGE",
        highlight=False,
        soft_wrap=True,
    )
