"""``sitefusion listen``: the DICOM node command (registered on the app by :mod:`.main`)."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console

from sitefusion.cli.options import ExplainOpt, ScoreSiteOpt, SrPatientOpt
from sitefusion.errors import SiteFusionError

__all__ = ["listen_cmd"]

_err = Console(stderr=True)


def _sr_patient(value: str) -> Literal["source", "blank"]:
    if value in ("source", "blank"):
        return "source" if value == "source" else "blank"
    raise SiteFusionError(f"--sr-patient is {value!r}; valid choices: source, blank")


def listen_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A finished run directory.")],
    out: Annotated[
        Path,
        typer.Option("--out", help="The node's folder: inbox, scores.csv, sr/, node.json."),
    ],
    ae_title: Annotated[str, typer.Option("--ae-title", help="This node's AE title.")],
    port: Annotated[int, typer.Option("--port", help="TCP port to listen on.")],
    allow: Annotated[
        list[str],
        typer.Option("--allow", help="A calling AE title to accept (repeatable); others refused."),
    ],
    send_to: Annotated[
        str | None,
        typer.Option("--send-to", help="Send each SR by C-STORE to AE@host:port."),
    ] = None,
    stow_to: Annotated[
        str | None,
        typer.Option("--stow-to", help="Send each SR by STOW-RS to this DICOMweb root URL."),
    ] = None,
    credentials: Annotated[
        Path | None,
        typer.Option(
            "--credentials",
            help='JSON file for --stow-to: {"username", "password"} or {"token"}.',
        ),
    ] = None,
    quiet_seconds: Annotated[
        float,
        typer.Option("--quiet-seconds", help="Score a series once nothing arrived for this long."),
    ] = 10.0,
    host: Annotated[str, typer.Option("--host", help="Address to bind.")] = "0.0.0.0",
    site: ScoreSiteOpt = None,
    explain: ExplainOpt = False,
    sr_patient: SrPatientOpt = "source",
) -> None:
    """Receive studies by DICOM C-STORE, score each series once complete, send the SRs back."""
    # lazy: keeps --help fast (pynetdicom, torch)
    from sitefusion.pacs import (
        Destination,
        DimseDestination,
        ListenNode,
        NodeSettings,
        StowDestination,
        load_credentials,
        parse_ae_address,
    )

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("pynetdicom", "highdicom"):  # one line per association and SR is enough
        logging.getLogger(noisy).setLevel(logging.WARNING)
    stop = threading.Event()
    try:
        if send_to and stow_to:
            raise SiteFusionError("--send-to and --stow-to: give one destination, not both")
        if credentials is not None and not stow_to:
            raise SiteFusionError("--credentials is for --stow-to only")
        destination: Destination | None = None
        if send_to:
            destination = DimseDestination(parse_ae_address(send_to), ae_title)
        elif stow_to:
            destination = StowDestination(stow_to.rstrip("/"), load_credentials(credentials))
        node = ListenNode(
            NodeSettings(
                run_dir=run_dir,
                out=out,
                ae_title=ae_title,
                port=port,
                allow=tuple(allow),
                destination=destination,
                quiet_seconds=quiet_seconds,
                host=host,
                site=site,
                explain=explain,
                sr_patient=_sr_patient(sr_patient),
            )
        )
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
        for sig in previous:  # finish the current pass, then stop
            signal.signal(sig, lambda *_: stop.set())
        try:
            node.serve(stop)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    except (SiteFusionError, OSError) as err:
        _err.print(f"[red]error:[/] {err}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=1) from None
