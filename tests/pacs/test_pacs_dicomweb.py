"""``sitefusion score --dicomweb``: studies found by QIDO-RS and retrieved by WADO-RS from a real
Orthanc, scored as files are, and their SRs stored back by STOW-RS exactly once."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from typer.testing import CliRunner

from sitefusion.cli.dicomweb import credentials_from
from sitefusion.cli.main import app
from sitefusion.errors import SiteFusionError
from sitefusion.pacs.dicomweb import parse_qido
from sitefusion.pacs.local import OrthancServer

pytestmark = pytest.mark.slow


def test_qido_filters_are_parsed_and_bad_ones_named() -> None:
    assert parse_qido("StudyDate=20240101-20240131&ModalitiesInStudy=CT") == {
        "StudyDate": "20240101-20240131",
        "ModalitiesInStudy": "CT",
    }
    with pytest.raises(SiteFusionError, match="--qido: 'StudyDate' is not key=value"):
        parse_qido("StudyDate")
    with pytest.raises(SiteFusionError, match="'Study Date' is not a DICOM keyword"):
        parse_qido("Study Date=1")


def test_credentials_come_from_the_environment_when_no_file(tmp_path: Path) -> None:
    assert credentials_from(None, {}) == {}
    assert credentials_from(None, {"SITEFUSION_DICOMWEB_TOKEN": "t"}) == {"token": "t"}
    env = {"SITEFUSION_DICOMWEB_USERNAME": "u", "SITEFUSION_DICOMWEB_PASSWORD": "p"}
    assert credentials_from(None, env) == {"username": "u", "password": "p"}
    with pytest.raises(SiteFusionError, match="set both"):
        credentials_from(None, {"SITEFUSION_DICOMWEB_USERNAME": "u"})


def test_credentials_never_go_to_a_remote_server_in_plain_text(
    pacs_run: Path, tmp_path: Path
) -> None:
    cred = tmp_path / "cred.json"
    cred.write_text(json.dumps({"username": "u", "password": "very-secret"}))
    result = CliRunner().invoke(
        app,
        [
            "score",
            str(pacs_run),
            "--out",
            str(tmp_path / "o"),
            "--dicomweb",
            "http://pacs.example.org/dicom-web",
            "--study",
            "1.2.3",
            "--credentials",
            str(cred),
        ],
    )
    assert result.exit_code == 1
    assert "credentials would travel in plain text" in result.output
    assert "very-secret" not in result.output


def test_a_study_is_retrieved_scored_and_its_srs_stored_back_once(
    pacs_run: Path,
    tmp_path: Path,
    study: dict[str, list[Path]],
    orthanc: Callable[[int], OrthancServer],
) -> None:
    pacs = orthanc(104)  # no node: the images are uploaded through the REST API
    for files in study.values():
        for f in files:
            pacs.upload(f)
    study_uid = str(pydicom.dcmread(next(iter(study.values()))[0]).StudyInstanceUID)
    out = tmp_path / "scores"
    args = ["score", str(pacs_run), "--out", str(out), "--dicomweb", pacs.dicomweb_url]
    result = CliRunner().invoke(app, [*args, "--study", study_uid, "--store-results"])
    assert result.exit_code == 0, result.output
    assert "1 studies: 6 instances retrieved now" in result.output
    assert "2 SR stored back" in result.output

    rows = list(csv.DictReader(io.StringIO((out / "scores.csv").read_text())))
    assert len(rows) == 6 and {r["status"] for r in rows} == {"ok"}
    srs = [pydicom.dcmread(io.BytesIO(pacs.file(i))) for i in pacs.instances("SR")]
    assert len(srs) == 2
    assert {str(s.StudyInstanceUID) for s in srs} == {study_uid}
    refs = {
        str(r.ReferencedSOPInstanceUID)
        for s in srs
        for r in s.CurrentRequestedProcedureEvidenceSequence[0]
        .ReferencedSeriesSequence[0]
        .ReferencedSOPSequence
    }
    assert refs == {str(pydicom.dcmread(f).SOPInstanceUID) for fs in study.values() for f in fs}

    # Found by QIDO this time; the SRs now in the study are not images and are left out, and
    # nothing is scored or stored twice.
    again = CliRunner().invoke(app, [*args, "--qido", "ModalitiesInStudy=MR", "--store-results"])
    assert again.exit_code == 0, again.output
    assert "0 instances retrieved now, 6 already here, 2 non-image objects left out" in again.output
    assert "0 SR stored back" in again.output and "0 scored now, 6 already done" in again.output
    assert len(pacs.instances("SR")) == 2
