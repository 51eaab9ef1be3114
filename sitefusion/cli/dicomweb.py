"""The DICOMweb options of ``sitefusion score`` and the call they make (kept apart from
:mod:`.main` so that it stays short)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from sitefusion.errors import SiteFusionError

__all__ = [
    "CREDENTIAL_VARIABLES",
    "CredentialsOpt",
    "DicomwebOpt",
    "QidoOpt",
    "StoreOpt",
    "StudyOpt",
    "credentials_from",
    "score_from_dicomweb",
]

DicomwebOpt = Annotated[
    str | None,
    typer.Option("--dicomweb", help="Retrieve the studies by WADO-RS from this DICOMweb root URL."),
]
StudyOpt = Annotated[
    list[str] | None,
    typer.Option("--study", help="A Study Instance UID to retrieve (repeatable)."),
]
QidoOpt = Annotated[
    str | None,
    typer.Option(
        "--qido",
        help="Find studies by QIDO-RS, e.g. 'StudyDate=20240101-20240131&ModalitiesInStudy=CT'.",
    ),
]
StoreOpt = Annotated[
    bool, typer.Option("--store-results", help="STOW-RS the SRs back to the --dicomweb server.")
]
CredentialsOpt = Annotated[
    Path | None,
    typer.Option(
        "--credentials",
        help='JSON file: {"username", "password"} or {"token"} (else the environment: '
        "SITEFUSION_DICOMWEB_USERNAME / _PASSWORD or _TOKEN).",
    ),
]

CREDENTIAL_VARIABLES = (
    "SITEFUSION_DICOMWEB_USERNAME",
    "SITEFUSION_DICOMWEB_PASSWORD",
    "SITEFUSION_DICOMWEB_TOKEN",
)
"""Environment variables read for DICOMweb credentials when no ``--credentials`` file is given."""


def credentials_from(path: Path | None, environ: dict[str, str]) -> dict[str, str]:
    """Credentials from the file, else from ``environ`` (:data:`CREDENTIAL_VARIABLES`), else none."""
    from sitefusion.pacs import load_credentials  # lazy: keeps --help fast

    if path is not None:
        return load_credentials(path)
    user, password, token = (environ.get(v) for v in CREDENTIAL_VARIABLES)
    if token:
        return {"token": token}
    if user or password:
        if not (user and password):
            raise SiteFusionError(
                "set both SITEFUSION_DICOMWEB_USERNAME and SITEFUSION_DICOMWEB_PASSWORD, or "
                "SITEFUSION_DICOMWEB_TOKEN"
            )
        return {"username": user, "password": password}
    return {}


def score_from_dicomweb(
    run_dir: Path,
    url: str,
    out: Path,
    studies: list[str] | None,
    qido: str | None,
    store_results: bool,
    credentials: Path | None,
    options: dict[str, Any],
) -> Any:
    """Parse the DICOMweb options and run :func:`sitefusion.pacs.dicomweb.score_dicomweb`."""
    from sitefusion.pacs.dicomweb import parse_qido, score_dicomweb  # lazy: keeps --help fast

    return score_dicomweb(
        run_dir,
        url,
        out,
        studies=studies or [],
        qido=parse_qido(qido) if qido else None,
        credentials=credentials_from(credentials, dict(os.environ)),
        store_results=store_results,
        **options,
    )
