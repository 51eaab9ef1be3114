"""The node's parts on their own: addresses, settings, credentials, the inbox and the ledger."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from sitefusion.errors import SiteFusionError
from sitefusion.pacs import (
    AeAddress,
    Inbox,
    NodeSettings,
    SentLedger,
    load_credentials,
    parse_ae_address,
)
from sitefusion.pacs.inbox import UNKNOWN_SERIES


def test_an_ae_address_is_parsed_and_bad_ones_are_named() -> None:
    assert parse_ae_address("ORTHANC@pacs.local:4242") == AeAddress("ORTHANC", "pacs.local", 4242)
    assert parse_ae_address("PACS@[::1]:104").host == "::1"
    with pytest.raises(SiteFusionError, match=r"--send-to: 'ORTHANC:4242' is not AE@host:port"):
        parse_ae_address("ORTHANC:4242")
    with pytest.raises(SiteFusionError, match="port 70000"):
        parse_ae_address("A@h:70000")
    with pytest.raises(SiteFusionError, match="not a valid AE title"):
        parse_ae_address("A_TITLE_LONGER_THAN_16@h:104")


def test_settings_refuse_an_empty_allow_list_and_bad_titles(tmp_path: Path) -> None:
    base = {"run_dir": tmp_path, "out": tmp_path, "port": 0}
    with pytest.raises(SiteFusionError, match="--allow: no calling AE title"):
        NodeSettings(ae_title="NODE", allow=(), **base).check()  # type: ignore[arg-type]
    with pytest.raises(SiteFusionError, match="--allow: 'BAD\\\\\\\\AE'"):
        NodeSettings(ae_title="NODE", allow=("BAD\\AE",), **base).check()  # type: ignore[arg-type]
    with pytest.raises(SiteFusionError, match="--quiet-seconds"):
        NodeSettings(ae_title="NODE", allow=("A",), quiet_seconds=-1, **base).check()  # type: ignore[arg-type]


def test_credentials_come_from_a_file_and_bad_files_are_named(tmp_path: Path) -> None:
    path = tmp_path / "cred.json"
    path.write_text(json.dumps({"username": "u", "password": "secret-pw"}))
    assert load_credentials(path) == {"username": "u", "password": "secret-pw"}
    path.write_text(json.dumps({"user": "u", "password": "secret-pw"}))
    with pytest.raises(SiteFusionError, match=r"credentials hold \['password', 'user'\]") as err:
        load_credentials(path)
    assert "secret-pw" not in str(err.value)
    assert load_credentials(None) == {}


def test_the_inbox_groups_by_series_and_survives_a_restart(tmp_path: Path) -> None:
    inbox = Inbox(tmp_path / "inbox")
    a = inbox.store(b"one", "1.2.3", "1.2.3.1")
    inbox.store(b"two", "1.2.3", "1.2.3.2")
    odd = inbox.store(b"three", "=HYPERLINK(x)", None)
    assert a == tmp_path / "inbox" / "1.2.3" / "1.2.3.1.dcm"
    assert odd.parent.name == UNKNOWN_SERIES and len(odd.stem) == 64
    assert not list((tmp_path / "inbox").rglob(".*"))  # no temporary file left
    series = inbox.series()
    assert set(series) == {"1.2.3", UNKNOWN_SERIES}
    assert [p.name for p in series["1.2.3"].files()] == ["1.2.3.1.dcm", "1.2.3.2.dcm"]
    stamp = series["1.2.3"].last_arrival
    assert inbox.quiet(5.0, now=stamp + 1) == {}
    assert set(inbox.quiet(5.0, now=stamp + 6)) == {"1.2.3", UNKNOWN_SERIES}

    inbox.mark_clean(["1.2.3"], before=stamp - 1)  # something arrived after the pass began
    assert inbox.series()["1.2.3"].dirty
    inbox.mark_clean(["1.2.3"], before=stamp + 1)
    assert not inbox.series()["1.2.3"].dirty

    partial = tmp_path / "inbox" / "1.2.3" / ".1.2.3.3.dcm.abc.tmp"  # a write cut by a crash
    partial.write_bytes(b"half")
    again = Inbox(tmp_path / "inbox")  # a restart: everything is to be looked at again
    assert not partial.exists()
    assert set(again.series()) == {"1.2.3", UNKNOWN_SERIES}
    assert all(s.dirty for s in again.series().values())


def test_the_ledger_persists_and_refuses_a_foreign_file(tmp_path: Path) -> None:
    path = tmp_path / "node.json"
    ledger = SentLedger(path)
    assert ledger.sent_uid("a.dcm") is None
    ledger.record("a.dcm", "1.2.9", "ORTHANC@h:1")
    assert SentLedger(path).sent_uid("a.dcm") == "1.2.9"
    assert SentLedger(path).count() == 1
    path.write_text(json.dumps({"format": "other", "version": 1, "sent": {}}))
    with pytest.raises(SiteFusionError, match="field 'format' is 'other'"):
        SentLedger(path)


def test_an_image_becomes_a_dicom_instance_a_modality_could_send(tmp_path: Path) -> None:
    import numpy as np
    import pydicom

    from sitefusion.pacs.local import image_to_dicom

    pixels = (np.arange(24 * 20, dtype=np.uint16).reshape(24, 20) * 7).astype(np.uint16)
    path = image_to_dicom(
        pixels, tmp_path / "a.dcm", study_uid="1.2.3", series_uid="1.2.3.4", number=2
    )
    ds = pydicom.dcmread(path)
    assert (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.InstanceNumber) == ("1.2.3", "1.2.3.4", 2)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
    np.testing.assert_array_equal(ds.pixel_array, pixels)
    with pytest.raises(SiteFusionError, match="2D uint8/uint16"):
        image_to_dicom(
            pixels.astype(np.float32), tmp_path / "b.dcm", study_uid="1", series_uid="2", number=1
        )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--send-to", "A@h:1", "--stow-to", "http://h/"], "give one destination, not both"),
        (["--send-to", "PACS:104"], "--send-to: 'PACS:104' is not AE@host:port"),
        (["--credentials", "c.json"], "--credentials is for --stow-to only"),
        (["--sr-patient", "none"], "--sr-patient is 'none'; valid choices: source, blank"),
    ],
)
def test_listen_refuses_bad_options_in_one_line(
    tmp_path: Path, extra: list[str], message: str
) -> None:
    from typer.testing import CliRunner

    from sitefusion.cli.main import app

    args = ["listen", str(tmp_path / "run"), "--out", str(tmp_path / "node"), "--ae-title", "NODE"]
    result = CliRunner().invoke(app, [*args, "--port", "0", "--allow", "PACS", *extra])
    assert result.exit_code == 1
    assert message in " ".join(result.output.split())


def test_listen_refuses_a_run_that_cannot_be_loaded_before_listening(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from sitefusion.cli.main import app

    (tmp_path / "run").mkdir()
    before = signal.getsignal(signal.SIGINT)
    args = ["listen", str(tmp_path / "run"), "--out", str(tmp_path / "node"), "--ae-title", "NODE"]
    result = CliRunner().invoke(app, [*args, "--port", "0", "--allow", "PACS"])
    assert result.exit_code == 1
    assert "error:" in result.output and str(tmp_path / "run") in " ".join(result.output.split())
    assert signal.getsignal(signal.SIGINT) is before  # the command's handlers are undone
    assert not (tmp_path / "node" / "inbox").exists() or not any(
        (tmp_path / "node" / "inbox").iterdir()
    )
