"""Patient identifiers are collected from headers and redacted from free text."""

from __future__ import annotations

import pydicom

from sitefusion.scoring import Redactor, patient_identifiers


def test_identifiers_include_name_parts_and_ids() -> None:
    ds = pydicom.Dataset()
    ds.PatientName = "Quuxington^Zebediah"
    ds.PatientID = "PID-93XJQ7Z"
    found = patient_identifiers(ds)
    assert {"Quuxington^Zebediah", "Quuxington", "Zebediah", "PID-93XJQ7Z"} <= found
    assert "Quuxington_Zebediah" in found


def test_redaction_of_paths_and_messages() -> None:
    r = Redactor.from_values(["Quuxington", "Zebediah", "PID-93XJQ7Z", "pre", "12"])
    text = "/exports/quuxington_ZEBEDIAH/xPID-93XJQ7Z.dcm: no DICM preamble, image 12"
    out = r(text)
    assert "quuxington" not in out.lower() and "zebediah" not in out.lower()
    assert "PID-93XJQ7Z" not in out
    assert "preamble" in out  # a short name part only matches whole tokens
    assert "image 12" in out  # two characters are never redacted
    assert "PID" not in repr(r)
