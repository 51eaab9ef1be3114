"""Short console summaries of what a training stage did (rendering only, no computation)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
from rich.console import Console
from rich.table import Table

# Types only: importing reporting must not pull in torch and MONAI (MONAI imports pyplot).
if TYPE_CHECKING:
    from sitefusion.normalization import NormalizerBank  # lazy: types only, no torch
    from sitefusion.training.context import RunData  # lazy: types only, no torch

__all__ = ["print_preparation", "print_site_table", "print_stage_timings"]


def print_preparation(console: Console, data: RunData, bank: NormalizerBank) -> None:
    """Per site: images per split, class mix, and mean intensity before and after normalization."""
    table = Table(title="prepared run: per-site splits and normalization")
    for col in (
        "site",
        "train",
        "val",
        "fusion",
        "test",
        "majority class",
        "raw mean",
        "normalized mean",
    ):
        table.add_column(col, justify="right" if col not in ("site", "majority class") else "left")
    classes = data.manifest.classes
    for site in data.manifest.sites:
        counts = [len(data.rows(s, site=site)) for s in ("train", "val", "fusion", "test")]
        rows = data.rows("train", site=site)
        y = data.labels[rows]
        top = int(np.bincount(y, minlength=len(classes)).argmax()) if len(y) else 0
        share = float((y == top).mean()) if len(y) else 0.0
        raw = float(data.images[rows].mean()) if len(rows) else float("nan")
        normed = (
            float(np.mean([bank.transform(data.images[i], site).array.mean() for i in rows]))
            if len(rows)
            else float("nan")
        )
        table.add_row(
            site, *map(str, counts), f"{classes[top]} ({share:.0%})", f"{raw:.3g}", f"{normed:.3g}"
        )
    console.print(table)
    console.print(
        f"{len(data.ids)} images, {len(classes)} classes, {len(data.manifest.sites)} sites; "
        f"normalizers ({bank.kind}) fitted on each site's training split only"
    )


def print_stage_timings(console: Console, timings: Mapping[str, float]) -> None:
    """One line per stage that ran, with its wall time."""
    if not timings:
        console.print("nothing to do: every stage was already finished")
        return
    for stage, seconds in timings.items():
        console.print(f"  {stage:<28} {seconds:8.1f} s")


def print_site_table(
    console: Console, table_data: Mapping[str, Mapping[str, float]], title: str
) -> None:
    """One row per method, one column per site (and ``mean``), values to three decimals."""
    sites = list(next(iter(table_data.values())).keys()) if table_data else []
    table = Table(title=title)
    table.add_column("method")
    for s in sites:
        table.add_column(s, justify="right")
    for method, per_site in table_data.items():
        table.add_row(method, *(f"{per_site[s]:.3f}" for s in sites))
    console.print(table)
