"""``sitefusion listen`` end to end, with real processes: dcmtk's storescu sends a study to the
node, the node scores it and sends its SRs to a real Orthanc; the node is killed and restarted;
a stranger's association is refused; a malformed instance gets an error row."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from pacs_samples import MODALITY_AE, NODE_AE, PATIENT_ID, PATIENT_NAME
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from sitefusion.pacs import AeAddress
from sitefusion.pacs.local import NodeProcess, OrthancServer, free_port, send_with_storescu

pytestmark = pytest.mark.slow


def wait_for(what: str, check: Callable[[], bool], timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def rows(out: Path) -> list[dict[str, str]]:
    path = out / "scores.csv"
    return list(csv.DictReader(io.StringIO(path.read_text()))) if path.exists() else []


def journal_items(out: Path) -> int:
    path = out / "scores.jsonl"
    return (
        len({json.loads(line)["item"] for line in path.read_text().splitlines()})
        if path.exists()
        else 0
    )


def sr_datasets(orthanc: OrthancServer) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(io.BytesIO(orthanc.file(i))) for i in orthanc.instances("SR")]


def referenced(sr: pydicom.Dataset) -> set[str]:
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    return {str(r.ReferencedSOPInstanceUID) for r in evidence.ReferencedSOPSequence}


def node_address(port: int) -> AeAddress:
    return AeAddress(NODE_AE, "127.0.0.1", port)


def test_a_study_from_storescu_comes_back_to_orthanc_as_valid_srs(
    tmp_path: Path,
    study: dict[str, list[Path]],
    storescu: str,
    orthanc: Callable[[int], OrthancServer],
    node: Callable[..., NodeProcess],
    node_port: int,
) -> None:
    pacs = orthanc(node_port)
    listener = node(node_port, "--quiet-seconds", "1", "--send-to", str(pacs.address))
    sent = send_with_storescu([tmp_path / "study"], MODALITY_AE, node_address(node_port))
    assert sent.returncode == 0, sent.stdout + sent.stderr

    wait_for("two SRs in Orthanc", lambda: len(pacs.instances("SR")) == 2)
    srs = sr_datasets(pacs)
    by_series = {
        str(
            sr.CurrentRequestedProcedureEvidenceSequence[0]
            .ReferencedSeriesSequence[0]
            .SeriesInstanceUID
        ): sr
        for sr in srs
    }
    assert set(by_series) == set(study)
    for series_uid, files in study.items():
        sources = {str(pydicom.dcmread(f).SOPInstanceUID) for f in files}
        assert referenced(by_series[series_uid]) == sources
        assert "Predicted class" in str(by_series[series_uid])

    out = tmp_path / "node"
    table = rows(out)
    assert len(table) == 6 and {r["status"] for r in table} == {"ok"}
    assert {r["series_uid"] for r in table} == set(study)
    assert all(r["sr"].startswith("sr/") for r in table)

    dciodvfy = shutil.which("dciodvfy")
    if dciodvfy is None:
        pytest.skip("dciodvfy (Debian package dicom3tools) is not installed: SRs not validated")
    for sr_id in pacs.instances("SR"):
        path = tmp_path / f"{sr_id}.dcm"
        path.write_bytes(pacs.file(sr_id))
        check = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, timeout=60)
        report = check.stdout + check.stderr
        assert [line for line in report.splitlines() if line.startswith("Error")] == [], report

    log = listener.log()
    assert f"association from {MODALITY_AE} (127.0.0.1" in log
    assert "6 instance(s) stored, 0 failed" in log
    assert log.count("sent SR ") == 2
    assert PATIENT_NAME.split("^")[0] not in log and PATIENT_ID not in log


def test_a_killed_node_scores_and_sends_everything_exactly_once_after_restart(
    tmp_path: Path,
    study: dict[str, list[Path]],
    storescu: str,
    orthanc: Callable[[int], OrthancServer],
    node: Callable[..., NodeProcess],
    node_port: int,
) -> None:
    pacs = orthanc(node_port)
    out = tmp_path / "node"
    first, second = list(study.values())
    nowhere = AeAddress("ORTHANC", "127.0.0.1", free_port())  # the PACS is down at first

    # First life: the CT series is scored but its SR cannot be sent; the MR series is half
    # received when the node is killed.
    crashed = node(node_port, "--quiet-seconds", "2", "--send-to", str(nowhere))
    assert send_with_storescu(first, MODALITY_AE, node_address(node_port)).returncode == 0
    wait_for("the first series scored", lambda: journal_items(out) == 3)
    wait_for("a failed send", lambda: "retrying in" in crashed.log())
    assert send_with_storescu(second[:1], MODALITY_AE, node_address(node_port)).returncode == 0
    crashed.kill()
    assert pacs.instances("SR") == []
    assert journal_items(out) == 3

    # Second life, with the PACS reachable: the rest of the MR series arrives.
    restarted = node(node_port, "--quiet-seconds", "5", "--send-to", str(pacs.address))
    assert send_with_storescu(second[1:], MODALITY_AE, node_address(node_port)).returncode == 0
    wait_for("two SRs in Orthanc", lambda: len(pacs.instances("SR")) == 2)
    time.sleep(6)  # another quiet period: nothing else may arrive
    srs = sr_datasets(pacs)
    assert len(srs) == 2
    sources = {
        uid: {str(pydicom.dcmread(f).SOPInstanceUID) for f in files} for uid, files in study.items()
    }
    assert sorted(map(referenced, srs), key=sorted) == sorted(sources.values(), key=sorted)

    table = rows(out)
    assert len(table) == 6 and len({r["sop_uids"] for r in table}) == 6
    assert {r["status"] for r in table} == {"ok"}
    log = restarted.log()  # both lives
    scored_now = [int(n) for n in re.findall(r"\((\d+) scored now", log)]
    assert sum(scored_now) == 6, log
    assert log.count("sent SR ") == 2
    ledger = json.loads((out / "node.json").read_text())
    assert len(ledger["sent"]) == 2


def test_a_stranger_is_refused_and_a_malformed_instance_gets_an_error_row(
    tmp_path: Path,
    study: dict[str, list[Path]],
    storescu: str,
    node: Callable[..., NodeProcess],
    node_port: int,
) -> None:
    from pynetdicom import AE
    from pynetdicom.sop_class import MRImageStorage, Verification  # type: ignore[attr-defined]

    listener = node(node_port, "--quiet-seconds", "1")
    out = tmp_path / "node"
    first = next(iter(study.values()))
    refused = send_with_storescu(first, "STRANGER", node_address(node_port))
    assert refused.returncode != 0
    wait_for("the refusal logged", lambda: "'STRANGER'" in listener.log())
    assert not any((out / "inbox").rglob("*.dcm"))

    # A dataset whose pixel data is cut short, then a good one, on two concurrent associations.
    bad = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    bad.SeriesInstanceUID, bad.SOPInstanceUID = generate_uid(), generate_uid()
    bad.PixelData = bad.PixelData[:100]
    good = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    good.SeriesInstanceUID, good.SOPInstanceUID = generate_uid(), generate_uid()
    ae = AE(ae_title=MODALITY_AE)
    ae.add_requested_context(MRImageStorage)
    ae.add_requested_context(Verification)
    echo = ae.associate("127.0.0.1", node_port, ae_title=NODE_AE)
    assert echo.is_established and int(echo.send_c_echo().Status) == 0  # "test connection"
    echo.release()
    assocs = [ae.associate("127.0.0.1", node_port, ae_title=NODE_AE) for _ in range(2)]
    assert all(a.is_established for a in assocs)
    statuses = [a.send_c_store(ds) for a, ds in zip(assocs, (bad, good), strict=True)]
    for a in assocs:
        a.release()
    assert [int(s.Status) for s in statuses] == [0, 0]

    wait_for("two rows", lambda: len(rows(out)) == 2)
    table = {r["series_uid"]: r for r in rows(out)}
    assert table[str(bad.SeriesInstanceUID)]["status"] == "error"
    assert table[str(bad.SeriesInstanceUID)]["error"]
    assert table[str(good.SeriesInstanceUID)]["status"] == "ok"

    # Still receiving after the bad one.
    assert send_with_storescu(first, MODALITY_AE, node_address(node_port)).returncode == 0
    wait_for("five rows", lambda: len(rows(out)) == 5)
    assert listener.process is not None and listener.process.poll() is None


def test_srs_can_go_back_by_stow_rs_and_a_terminated_node_says_it_stopped(
    tmp_path: Path,
    study: dict[str, list[Path]],
    storescu: str,
    orthanc: Callable[[int], OrthancServer],
    node: Callable[..., NodeProcess],
    node_port: int,
) -> None:
    pacs = orthanc(node_port)
    listener = node(node_port, "--quiet-seconds", "1", "--stow-to", pacs.dicomweb_url)
    assert (
        send_with_storescu([tmp_path / "study"], MODALITY_AE, node_address(node_port)).returncode
        == 0
    )
    wait_for("two SRs in Orthanc", lambda: len(pacs.instances("SR")) == 2)
    assert {str(sr.StudyInstanceUID) for sr in sr_datasets(pacs)} == {
        str(pydicom.dcmread(next(iter(study.values()))[0]).StudyInstanceUID)
    }
    listener.stop()  # SIGTERM
    log = listener.log()
    assert len(re.findall(rf"sent SR \S+ to {re.escape(pacs.dicomweb_url)}", log)) == 2
    assert log.rstrip().endswith("stopped")
