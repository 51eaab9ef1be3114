"""Scoring where radiologists work, on loopback: a PACS (Orthanc), the sitefusion DICOM node, a
modality (dcmtk's storescu), and the SRs coming back into the PACS.

Run with ``make demo-pacs`` (or ``.venv/bin/python pipelines/demo_pacs.py``). Chains library
calls only:

1. the demo's trained run (``runs/demo``; trained by ``train_run`` first when absent);
2. the modality's images: pydicom's CT and MR samples (two studies of their own) and a few of the synthetic set's
   images as a Secondary Capture series of a third study (``image_to_dicom``);
3. Orthanc on free loopback ports, knowing the node (``SITEFUSION``) and the modality;
4. ``sitefusion listen`` allowing only Orthanc's AE title and sending SRs to Orthanc;
5. storescu sends the study to Orthanc, and Orthanc forwards it to the node (what a routing
   rule does in a PACS); the pipeline waits until every series has its SR in Orthanc;
6. the SRs are exported from Orthanc into ``<out>/from-pacs``, and every process started here
   is stopped (also on error or Ctrl-C).
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from rich.console import Console

from sitefusion.config import load_config
from sitefusion.pacs import AeAddress
from sitefusion.pacs.local import (
    NodeProcess,
    OrthancServer,
    free_port,
    image_to_dicom,
    send_with_storescu,
)
from sitefusion.workflows import train_run

ROOT = Path(__file__).resolve().parent.parent
NODE_AE = "SITEFUSION"
MODALITY_AE = "MODALITY"


def main() -> None:
    """Parse arguments and run the demo."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "demo.yaml")
    parser.add_argument("--run", type=Path, default=Path("runs/demo"))
    parser.add_argument("--out", type=Path, default=Path("runs/demo-pacs"))
    parser.add_argument("--images", type=int, default=4, help="synthetic images in the study")
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()
    console = Console()
    t0 = time.perf_counter()
    # Trains the demo run when absent; a finished run is left untouched.
    train_run(load_config(args.config), args.run, console=console)
    shutil.rmtree(args.out, ignore_errors=True)  # each demo starts from an empty folder

    study, modality = generate_uid(), args.out / "modality"
    modality.mkdir(parents=True)
    for name in ("CT_small.dcm", "MR_small.dcm"):
        shutil.copy(str(get_testdata_file(name)), modality / name)
    series = generate_uid()
    pngs = sorted((args.run / "data").rglob("*.png"))[:: max(1, 200 // args.images)][: args.images]
    for k, png in enumerate(pngs):
        with Image.open(png) as image:
            # The synthetic set is 16-bit grey: convert("L") would clip every value to 255.
            pixels = np.asarray(image if image.mode in ("L", "I;16") else image.convert("L"))
        image_to_dicom(
            pixels,
            modality / "synthetic" / f"{k:02d}.dcm",
            study_uid=study,
            series_uid=series,
            number=k + 1,
        )
    expected_series = 2 + bool(pngs)

    node_port = free_port()
    pacs = OrthancServer(
        args.out / "orthanc",
        {
            "sitefusion": AeAddress(NODE_AE, "127.0.0.1", node_port),
            "modality": AeAddress(MODALITY_AE, "127.0.0.1", free_port()),
        },
    )
    node = NodeProcess(
        [
            str(args.run),
            "--out",
            str(args.out / "node"),
            "--ae-title",
            NODE_AE,
            "--port",
            str(node_port),
            "--host",
            "127.0.0.1",
            "--allow",
            pacs.aet,
            "--quiet-seconds",
            "3",
        ],
        args.out / "node.log",
    )
    with pacs:
        node.args = [*node.args, "--send-to", str(pacs.address)]
        try:
            node.start()
            console.print(
                f"Orthanc at {pacs.url} (DICOM {pacs.address}); node {NODE_AE} on {node_port}"
            )
            sent = send_with_storescu([modality], MODALITY_AE, pacs.address)
            if sent.returncode != 0:
                raise SystemExit(f"storescu failed: {sent.stderr.strip()[-500:]}")
            for study_id in pacs.rest("/studies"):  # the routing rule: every new study to the node
                pacs.rest(
                    "/modalities/sitefusion/store", {"Resources": [study_id], "Synchronous": True}
                )
            deadline = time.monotonic() + args.timeout
            while len(pacs.instances("SR")) < expected_series:
                if time.monotonic() > deadline:
                    raise SystemExit(
                        f"no SRs after {args.timeout:.0f} s; see {args.out / 'node.log'}"
                    )
                time.sleep(1)
            export = args.out / "from-pacs"
            export.mkdir(parents=True, exist_ok=True)
            for sr_id in pacs.instances("SR"):
                (export / f"{sr_id}.dcm").write_bytes(pacs.file(sr_id))
        finally:
            node.stop()
    console.print(
        f"demo-pacs finished in {time.perf_counter() - t0:.0f} s: {expected_series} series sent "
        f"by storescu through Orthanc to the node; {expected_series} SRs back in Orthanc, "
        f"exported to {args.out / 'from-pacs'}\n"
        f"  scores:      {args.out / 'node' / 'scores.csv'}\n"
        f"  review page: {args.out / 'node' / 'review.html'}\n"
        f"  node log:    {args.out / 'node.log'}\n"
        f"  Orthanc log: {args.out / 'orthanc' / 'orthanc.log'} (Orthanc was stopped)"
    )


if __name__ == "__main__":
    main()
