"""Command-line options that several commands share with the same meaning (``score`` and
``listen`` score the same way), declared once so their names, help and defaults cannot drift."""

from __future__ import annotations

from typing import Annotated

import typer

__all__ = ["ExplainOpt", "ScoreSiteOpt", "SrPatientOpt"]

ScoreSiteOpt = Annotated[
    str | None,
    typer.Option("--site", help="Site of every input (default: from DICOM tags, else unseen)."),
]
ExplainOpt = Annotated[
    bool, typer.Option("--explain", help="Write a Grad-CAM overlay and weight chart per item.")
]
SrPatientOpt = Annotated[
    str,
    typer.Option(
        "--sr-patient",
        help="Patient module of each DICOM SR: 'source' (the images' own, for their "
        "archive) or 'blank' (for SRs that leave the hospital).",
    ),
]
