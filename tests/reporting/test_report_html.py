"""report.html: self-contained, every figure present and decodable, opened in headless Chromium."""

from __future__ import annotations

import base64
import copy
import json
import re
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sitefusion.evaluation import PredictionSet, validate_metrics
from sitefusion.evaluation.errors import EvaluationError, MetricsSchemaError
from sitefusion.reporting import render_html, write_report

IMG = re.compile(r"<img src='data:image/png;base64,([A-Za-z0-9+/=]+)' alt='([^']*)'>")
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


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])  # IHDR
    return width, height


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory, doc: dict[str, Any], preds: PredictionSet):
    out = tmp_path_factory.mktemp("report")
    return write_report(doc, preds, out)


def test_write_report_files(report: Any, doc: dict[str, Any]) -> None:
    assert report.metrics_json.name == "metrics.json"
    loaded = json.loads(report.metrics_json.read_text())
    validate_metrics(loaded)
    assert loaded["margins"] == json.loads(json.dumps(doc["margins"]))
    assert report.markdown.read_text().startswith("# Cross-site evaluation report")
    # atomic writes leave no temporary files behind
    assert sorted(p.name for p in report.html.parent.iterdir()) == [
        "metrics.json",
        "report.html",
        "report.md",
    ]


def test_html_is_self_contained_with_all_figures(report: Any) -> None:
    text = report.html.read_text()
    assert "http://" not in text and "https://" not in text and "<script" not in text
    assert "<link" not in text and "url(" not in text
    images = IMG.findall(text)
    alts = [alt for _, alt in images]
    # bars (balanced accuracy, macro AUC), ROC, confusion, reliability, cross-site, attention
    assert len(images) == 7, alts
    assert any("ROC" in a for a in alts) and any("Confusion" in a for a in alts)
    assert any("before and after temperature scaling" in a for a in alts)
    for data, alt in images:
        width, height = _png_size(base64.b64decode(data))
        assert width > 100 and height > 100, alt
    # the prevalence table sits next to every per-site figure
    assert text.count("<div class='figrow'>") == len(images)
    assert text.count("<aside><h3>Class prevalence per site</h3>") == len(images)


def test_html_without_predictions(tmp_path: Path, doc: dict[str, Any]) -> None:
    path = render_html(doc, None, tmp_path)
    text = path.read_text()
    assert len(IMG.findall(text)) == 4  # bars x2, cross-site, attention
    assert "need the per-image predictions" in text


def test_invalid_metrics_write_nothing(tmp_path: Path, doc: dict[str, Any]) -> None:
    broken = copy.deepcopy(doc)
    broken["methods"]["fusion"]["overall"]["balanced_accuracy"]["value"] = 3.0
    with pytest.raises(MetricsSchemaError, match="balanced_accuracy"):
        write_report(broken, None, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_nan_is_written_as_null(tmp_path: Path, doc: dict[str, Any]) -> None:
    with_nan = copy.deepcopy(doc)
    with_nan["methods"]["pooled"]["per_site"]["C"]["macro_auc"] = {
        "value": float("nan"),
        "ci95": [np.float64("nan"), None],
    }
    paths = write_report(with_nan, None, tmp_path)
    loaded = json.loads(paths.metrics_json.read_text())
    assert loaded["methods"]["pooled"]["per_site"]["C"]["macro_auc"] == {
        "value": None,
        "ci95": [None, None],
    }


def test_mismatched_predictions_are_refused(
    tmp_path: Path, doc: dict[str, Any], preds: PredictionSet
) -> None:
    other = copy.deepcopy(doc)
    other["sites"] = ["A", "B", "X"]
    with pytest.raises(EvaluationError, match="predictions and metrics disagree"):
        render_html(other, preds, tmp_path)


def test_rendering_leaves_matplotlib_state_alone(tmp_path: Path, doc: dict[str, Any]) -> None:
    code = "import sys, sitefusion.reporting\nprint('matplotlib' in sys.modules)\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"  # importing reporting does not import matplotlib
    import matplotlib

    before = matplotlib.get_backend()
    render_html(doc, None, tmp_path)
    assert matplotlib.get_backend() == before


def test_chromium_renders_every_figure(chromium: str, report: Any, tmp_path: Path) -> None:
    # a copy of the report with a probe that records what the browser decoded
    probe = tmp_path / "probe.html"
    probe.write_text(
        report.html.read_text().replace(
            "</body>",
            "<script>window.addEventListener('load', () => document.body.setAttribute("
            "'data-widths', Array.from(document.images).map(i => i.complete ? i.naturalWidth "
            ": -1).join(',')));</script></body>",
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
    match = re.search(r'data-widths="([^"]*)"', dom.stdout)
    assert match is not None, dom.stderr[-2000:]
    widths = [int(w) for w in match.group(1).split(",")]
    assert len(widths) == 7
    assert all(w > 100 for w in widths), widths
    assert dom.stdout.count("data:image/png;base64,") == 7

    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            *common,
            "--hide-scrollbars",
            "--window-size=1400,2400",
            f"--screenshot={shot}",
            report.html.as_uri(),
        ],
        capture_output=True,
        timeout=60,
        check=False,
    )
    from PIL import Image

    with Image.open(shot) as image:
        assert image.size == (1400, 2400)
        pixels = np.asarray(image.convert("L"))
    assert (pixels < 200).mean() > 0.02  # text and figures drawn, not a blank page
