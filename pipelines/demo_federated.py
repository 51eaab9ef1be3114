"""The federated demo: the embedded synthetic 4-site set trained across real Flower processes.

Run with ``make demo-federated`` (or ``.venv/bin/python pipelines/demo_federated.py --out
runs/demo-federated``). Chains library calls only:

1. generate the synthetic set (as ``make demo``) and give each site a manifest of its own rows;
2. start a SuperLink and one SuperNode per site on free 127.0.0.1 ports
   (:class:`~sitefusion.federated.deploy.LocalFederation`);
3. ``flwr run`` the sitefusion app: the coordinator trains the experts, the fusion head and the
   FedAvg baseline across the sites and evaluates every method at the sites
   (:func:`~sitefusion.federated.federate`), writing ``<out>/run`` and ``<out>/run/report``;
4. stop every process it started and print the per-site table.

A rerun with the same ``--out`` resumes the federated run from its run directory.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import yaml
from rich.console import Console

from sitefusion.config import config_to_dict, load_config
from sitefusion.data import generate_from_config, split_manifest_by_site
from sitefusion.federated import SiteSetup
from sitefusion.federated.deploy import LocalFederation
from sitefusion.reporting import render_markdown_table

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    """Parse arguments and run the federated demo."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "demo-federated.yaml")
    parser.add_argument("--out", type=Path, default=Path("runs/demo-federated"))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--timeout", type=float, default=1800, help="seconds for the whole run")
    args = parser.parse_args()
    console = Console()
    t0 = time.perf_counter()
    out = args.out.resolve()
    cfg = load_config(args.config, args.overrides)
    data = out / "data"
    manifest = data / "manifest.csv"
    if not manifest.exists():
        generate_from_config(data, cfg.data.synthetic)
    setups = [
        SiteSetup(site, path, data, out / "sites" / site / "work")
        for site, path in split_manifest_by_site(manifest, out / "sites").items()
    ]
    # The coordinator's config: the resolved YAML it is started with (no data is read from it).
    request = out / "federate.yaml"
    request.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), encoding="utf-8")
    run_dir = out / "run"
    with LocalFederation(out / "flower", setups, say=console.print) as federation:
        outcome = federation.run(
            request,
            run_dir,
            timeout=args.timeout,
            on_line=lambda line: console.print(line, highlight=False, markup=False),
        )
    if outcome.status != "finished:completed":
        console.print(
            f"[bold red]federated run {outcome.run_id} ended with status {outcome.status}[/]; "
            f"logs in {out / 'flower' / 'logs'}"
        )
        sys.exit(1)
    metrics = json.loads((run_dir / "report" / "metrics.json").read_text(encoding="utf-8"))
    console.print(render_markdown_table(metrics), highlight=False, soft_wrap=True)
    console.print(
        f"federated demo finished in {time.perf_counter() - t0:.0f} s; run directory {run_dir}, "
        f"report {run_dir / 'report' / 'report.html'}"
    )


if __name__ == "__main__":
    main()
