"""``review.html``: written beside scores.csv by every batch, one card per row, self-contained,
rendered by headless Chromium with its images decoded and its flagged-only filter working."""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scoring_samples import PATIENT_ID, PATIENT_NAME, pydicom_path, tagged_dicom
from typer.testing import CliRunner

from sitefusion.cli.main import app
from sitefusion.scoring.review import thumbnail_png

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def reviewed(
    scoring_run: Path, synthetic_pngs: list[Path], tmp_path_factory: pytest.TempPathFactory
) -> Any:
    """A small batch with --explain: PNGs, a real DICOM, a tagged DICOM, a constant image (OOD)
    and a broken file; returns (out, rows, page text)."""
    root = tmp_path_factory.mktemp("review_in")
    for i, png in enumerate(synthetic_pngs[:3]):
        shutil.copy(png, root / f"png_{i}.png")
    shutil.copy(pydicom_path("CT_small.dcm"), root / "CT_small.dcm")
    tagged_dicom(root / "tagged.dcm")
    from PIL import Image

    Image.fromarray(np.full((24, 24), 7, np.uint8)).save(root / "flat.png")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path_factory.mktemp("review") / "out"
    result = CliRunner().invoke(
        app, ["score", str(scoring_run), str(root), "--out", str(out), "--explain"]
    )
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((out / "scores.csv").open(encoding="utf-8")))
    return out, rows, (out / "review.html").read_text(encoding="utf-8")


def test_every_row_has_a_card_with_what_the_row_says(reviewed: Any) -> None:
    _, rows, page = reviewed
    cards = re.findall(
        r"<article class='card( flagged)?' data-status='(ok|error)' data-item='(\w+)'", page
    )
    assert [c[2] for c in cards] == [r["item"] for r in rows]
    by_item = {r["item"]: r for r in rows}
    for flagged, status, item in cards:
        row = by_item[item]
        assert status == row["status"]
        assert bool(flagged) == (row["status"] != "ok" or row["ood_flag"] == "true")
    broken = next(r for r in rows if r["input"].endswith("broken.png"))
    assert broken["status"] == "error"
    assert "error: " in page and Path(broken["input"]).name in page
    flat = next(r for r in rows if r["input"].endswith("flat.png"))
    assert flat["ood_flag"] == "true" and "OOD: " in page
    ok = [r for r in rows if r["status"] == "ok"]
    assert page.count("prediction <b>") == len(ok)
    assert page.count("aria-label='expert weights'") == len(ok)
    assert page.count("alt='Grad-CAM of ") == len(ok)  # --explain: one overlay per scored item


def test_the_page_is_self_contained_and_names_no_patient(reviewed: Any) -> None:
    _, rows, page = reviewed
    assert not re.search(r"(src|href)=['\"](?!data:)", page)  # nothing fetched
    assert "http://" not in page and "https://" not in page
    assert page.count("src='data:image/png;base64,") == len(rows) - 1 + sum(
        r["status"] == "ok" for r in rows
    )  # a thumbnail per readable item, an overlay per scored one
    assert PATIENT_NAME.split("^")[0] not in page and PATIENT_ID not in page


def test_a_thumbnail_shows_the_image_as_scored() -> None:
    from io import BytesIO

    from PIL import Image

    ramp = np.tile(np.arange(24, dtype=np.float32), (24, 1))[None]
    with Image.open(BytesIO(thumbnail_png(ramp))) as image:
        assert image.size == (24, 24)  # its own size: the page scales it up, pixelated
        pixels = np.asarray(image)
    assert pixels[0, 0] == 0 and pixels[0, -1] == 255  # stretched, left to right
    volume = np.zeros((1, 5, 24, 24), np.float32)
    volume[0, 2] = ramp[0]  # a volume shows its middle slice
    assert thumbnail_png(volume) == thumbnail_png(ramp)


def test_chromium_renders_the_cards_and_filters_the_flagged(
    chromium: str, reviewed: Any, tmp_path: Path
) -> None:
    out, rows, page = reviewed
    probe = tmp_path / "probe.html"
    probe.write_text(
        page.replace(
            "</body>",
            "<script>window.addEventListener('load', () => {"
            "const widths = Array.from(document.images).map(i => i.complete ? i.naturalWidth : -1);"
            "const box = document.getElementById('only-flagged'); box.checked = true;"
            "box.dispatchEvent(new Event('change'));"
            "const shown = Array.from(document.querySelectorAll('.card'))"
            ".filter(c => c.offsetParent !== null).length;"
            "document.body.setAttribute('data-probe', widths.join(',') + '|' + shown);"
            "});</script></body>",
        )
    )
    common = [chromium, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(
        [*common, "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    match = re.search(r'data-probe="([^"|]*)\|(\d+)"', dom.stdout)
    assert match is not None, dom.stderr[-2000:]
    widths = [int(w) for w in match.group(1).split(",")]
    assert len(widths) == page.count("<img ")
    assert all(w > 0 for w in widths), widths
    flagged = sum(r["status"] != "ok" or r["ood_flag"] == "true" for r in rows)
    assert 0 < flagged < len(rows)
    assert int(match.group(2)) == flagged

    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            *common,
            "--hide-scrollbars",
            "--window-size=1200,1600",
            f"--screenshot={shot}",
            (out / "review.html").as_uri(),
        ],
        capture_output=True,
        timeout=60,
        check=False,
    )
    from PIL import Image

    with Image.open(shot) as image:
        assert image.size == (1200, 1600)
        pixels = np.asarray(image.convert("L"))
    assert (pixels < 200).mean() > 0.02  # cards, thumbnails and bars drawn, not a blank page
