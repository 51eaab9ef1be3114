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


def test_a_batch_wide_redactor_finds_its_identifiers_among_thousands() -> None:
    """A batch redacts every row with all its headers' identifiers (issue 31, class 2); the
    redactor tests only those whose first characters occur in the text, and must still find
    every one that does, in any case."""
    import random
    import string

    rng = random.Random(0)
    many = {"".join(rng.choices(string.ascii_uppercase, k=8)) for _ in range(20_000)}
    r = Redactor(frozenset(many | {"Quuxington", "PID-93XJQ7Z", "DOE"}))
    out = r("/exports/QUUXINGTON_doe/xpid-93xjq7z/photo.png")
    assert out == "/exports/[redacted]_[redacted]/x[redacted]/photo.png"
    sample = sorted(many)[:50]
    for name in sample:
        assert r(f"/in/{name.lower()}/a.png") == "/in/[redacted]/a.png"
    assert r("/in/plain/a.png") == "/in/plain/a.png"
