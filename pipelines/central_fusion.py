"""Central pipeline: with every site's expert in the run directory, train the pooled baseline,
cache features, fit the fusion heads and baselines, and evaluate.

``python pipelines/central_fusion.py CONFIG --out RUN_DIR [--report DIR] [--loso]``. Experts that
are missing are trained here (resuming any that were interrupted).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from sitefusion.config import load_config
from sitefusion.reporting import print_stage_timings, render_markdown_table
from sitefusion.workflows import evaluate_run, train_run


def main() -> None:
    """Parse arguments, finish the run and evaluate it."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("config", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--report", type=Path, default=None)
    parser.add_argument("--loso", action="store_true")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    console = Console()
    result = train_run(load_config(args.config, args.overrides), args.out, console=console)
    print_stage_timings(console, result["timings"])
    metrics = evaluate_run(
        args.out, args.report or args.out / "report", loso=args.loso, console=console
    )
    console.print(render_markdown_table(metrics), highlight=False)


if __name__ == "__main__":
    main()
