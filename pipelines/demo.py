"""The main job on the embedded default: generate the synthetic multi-site set, train, evaluate.

Run with ``make demo`` (or ``.venv/bin/python pipelines/demo.py --out runs/demo``). Chains library
calls only: ``train_run`` then ``evaluate_run``; reruns resume and skip finished stages.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console

from sitefusion.config import load_config
from sitefusion.reporting import print_stage_timings, render_markdown_table
from sitefusion.workflows import evaluate_run, train_run

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    """Parse arguments and run the demo chain."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "demo.yaml")
    parser.add_argument("--out", type=Path, default=Path("runs/demo"))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    console = Console()
    cfg = load_config(args.config, args.overrides)
    t0 = time.perf_counter()
    result = train_run(cfg, args.out, console=console)
    print_stage_timings(console, result["timings"])
    metrics = evaluate_run(args.out, args.out / "report", console=console)
    # soft_wrap: a table row stays one line in logs and narrow terminals
    console.print(render_markdown_table(metrics), highlight=False, soft_wrap=True)
    console.print(
        f"demo finished in {time.perf_counter() - t0:.0f} s; run directory {args.out}, "
        f"report {args.out / 'report' / 'report.html'}"
    )


if __name__ == "__main__":
    main()
