"""A federation on this machine: one real Flower SuperNode per site of a manifest.

``make demo-federated`` runs it on the embedded synthetic 4-site set (``.venv/bin/python
pipelines/federated.py --out runs/demo-federated``); HAM10000 with one SuperNode per acquisition
site is ``.venv/bin/python pipelines/federated.py --config configs/ham10000-federated.yaml
--manifest ../shared/data/ham10000/metadata.csv --out runs/ham-federated``. Chains library
calls only:

1. give each site a manifest of its own rows, split from ``--manifest`` (images stay where they
   are, under ``--root``, default the manifest's folder), or without ``--manifest`` generate the
   config's synthetic set (as ``make demo``) and split that;
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
from sitefusion.federated import SiteSetup, write_group_key
from sitefusion.federated.deploy import LocalFederation
from sitefusion.reporting import render_markdown_table

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    """Parse arguments and run the federation."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "demo-federated.yaml")
    parser.add_argument("--out", type=Path, default=Path("runs/demo-federated"))
    parser.add_argument(
        "--manifest", type=Path, help="CSV of every site's rows (default: generate the demo set)"
    )
    parser.add_argument("--root", type=Path, help="folder image paths are relative to")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--timeout", type=float, default=1800, help="seconds for the whole run")
    args = parser.parse_args()
    console = Console()
    t0 = time.perf_counter()
    out = args.out.resolve()
    cfg = load_config(args.config, args.overrides)
    if args.manifest is None:
        root = out / "data"
        manifest = root / "manifest.csv"
        if not manifest.exists():
            generate_from_config(root, cfg.data.synthetic)
    else:
        manifest = args.manifest.resolve()
        root = (args.root or manifest.parent).resolve()
    sites = split_manifest_by_site(manifest, out / "sites", site_column=cfg.data.site)
    # The consortium's group key, which every site holds and the coordinator never sees.
    key = out / "sites" / "group.key"
    if not key.exists():
        write_group_key(key)
    setups = [
        SiteSetup(site, path, root, out / "sites" / site / "work", group_key=key)
        for site, path in sites.items()
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
        f"federated run finished in {time.perf_counter() - t0:.0f} s; run directory {run_dir}, "
        f"report {run_dir / 'report' / 'report.html'}"
    )


if __name__ == "__main__":
    main()
