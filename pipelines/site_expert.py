"""Per-site pipeline, run by one hospital where its data lives: normalizer + that site's expert.

``python pipelines/site_expert.py CONFIG --site NAME --out RUN_DIR``. The run directory's
``normalizers/<site>.json`` and ``experts/<site>.safetensors`` are what the hospital shares.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from sitefusion.config import load_config
from sitefusion.reporting import print_stage_timings
from sitefusion.workflows import train_run


def main() -> None:
    """Parse arguments and train one site's expert."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("config", type=Path)
    parser.add_argument("--site", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    console = Console()
    result = train_run(
        load_config(args.config, args.overrides), args.out, console=console, sites=[args.site]
    )
    print_stage_timings(console, result["timings"])


if __name__ == "__main__":
    main()
