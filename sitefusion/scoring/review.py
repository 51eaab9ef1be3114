"""``review.html``: the page a radiologist opens beside ``scores.csv``, one card per item.

Each card shows a thumbnail of the image as scored (the conformed array, before the site
normalization), the prediction and its probability, the expert-weight bar (which site's expert
the fusion relied on), the OOD flag and its reason, the Grad-CAM overlay when the batch was
explained, and for an error row its reason. A checkbox shows only the flagged cards (OOD or
error). The page is self-contained: images are inlined as base64 PNG, no script or style is
fetched, nothing refers to the network.

Thumbnails are written by the batch as items are scored (``thumbs/<item>.png``, atomically),
so a resumed batch has them for the items scored before; the page is rewritten from the final
rows at the end of every batch. Only what the rows already hold is shown (redacted input paths,
UIDs, scores): no patient attribute.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from sitefusion.atomic import write_bytes_replaceable, write_text_atomic
from sitefusion.scoring.outputs import publish

__all__ = ["REVIEW_NAME", "render_review", "thumbnail_png", "write_review", "write_thumbnail"]

REVIEW_NAME = "review.html"
_THUMB = 128  # pixels, longest side
_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def thumbnail_png(array: np.ndarray) -> bytes:
    """A PNG of a conformed image ``[C, *S]``: the middle slice of a volume, grey or RGB,
    scaled to 0-255 between its 1st and 99th percentiles, longest side at most :data:`_THUMB`."""
    a = np.asarray(array, dtype=np.float32)  # display only: float32 is plenty
    while a.ndim > 3:  # a volume [C, D, H, W]: its middle slice
        a = a[:, a.shape[1] // 2]
    if a.ndim == 2:
        a = a[None]
    low, high = np.percentile(a, [1, 99]) if a.size else (0.0, 1.0)
    scaled = np.clip((a - low) / (high - low if high > low else 1.0), 0, 1) * 255
    pixels = scaled.astype(np.uint8)
    image = (
        Image.fromarray(pixels[0])
        if pixels.shape[0] != 3
        else Image.fromarray(np.moveaxis(pixels, 0, -1), "RGB")
    )
    # An image as small as the page's thumbnail box travels at its own size and the page
    # scales it up without smoothing (the pixels the model saw stay visible as pixels); a
    # larger one is shrunk. Fast PNG compression: the thumbnails are written while scoring.
    factor = _THUMB / max(image.size)
    if factor < 1:
        size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
        image = image.resize(size, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def write_thumbnail(out: Path, item_id: str, array: np.ndarray) -> Path:
    """Write ``thumbs/<item_id>.png`` in ``out`` atomically (not flushed to disk one by one: a
    thumbnail a crash left empty is shown as missing, never as a broken picture); returns its
    path."""
    return write_bytes_replaceable(out / "thumbs" / f"{item_id}.png", thumbnail_png(array))


def _inline(path: Path) -> str | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if not data:  # a thumbnail a crash cut short
        return None
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _img(src: str | None, alt: str, cls: str) -> str:
    if src is None:
        return f"<div class='{cls} missing'>no image</div>"
    return f"<img class='{cls}' src='{src}' alt='{html.escape(alt, quote=True)}'>"


def _weight_bar(row: dict[str, Any], sites: Sequence[str]) -> str:
    parts = []
    for k, site in enumerate(sites):
        try:
            w = float(row.get(f"weight_{site}") or 0.0)
        except (TypeError, ValueError):
            w = 0.0
        label = html.escape(f"{site} {w:.0%}", quote=True)
        parts.append(
            f"<span class='seg' style='width:{max(w, 0.0) * 100:.2f}%;"
            f"background:{_COLOURS[k % len(_COLOURS)]}' title='{label}'></span>"
        )
    legend = " ".join(
        f"<span class='key'><i style='background:{_COLOURS[k % len(_COLOURS)]}'></i>"
        f"{html.escape(s)} {float(row.get(f'weight_{s}') or 0.0):.0%}</span>"
        for k, s in enumerate(sites)
    )
    return f"<div class='bar' role='img' aria-label='expert weights'>{''.join(parts)}</div><div class='legend'>{legend}</div>"


def _card(row: dict[str, Any], out: Path, classes: Sequence[str], sites: Sequence[str]) -> str:
    item = str(row.get("item", ""))
    name = Path(str(row.get("input") or "")).name or item
    ok = row.get("status") == "ok"
    flagged = (not ok) or bool(row.get("ood_flag"))
    thumb = _img(_inline(out / "thumbs" / f"{item}.png"), f"{name} as scored", "thumb")
    body: list[str] = [
        f"<h3 title='{html.escape(str(row.get('input') or ''), quote=True)}'>{html.escape(name)}</h3>"
    ]
    if ok:
        pred = str(row.get("prediction", ""))
        prob = float(row.get(f"prob_{pred}") or 0.0) if pred in classes else 0.0
        body.append(
            f"<p class='pred'>prediction <b>{html.escape(pred)}</b> "
            f"<span class='prob'>{prob:.1%}</span></p>"
        )
        body.append(_weight_bar(row, sites))
        if row.get("ood_flag"):
            reason = html.escape(str(row.get("ood_reason") or "unlike the training data"))
            body.append(f"<p class='ood'>OOD: {reason}</p>")
        else:
            body.append("<p class='inlier'>in distribution</p>")
        for rel in row.get("explanation") or []:
            if "gradcam" in str(rel):
                body.append(_img(_inline(out / str(rel)), f"Grad-CAM of {name}", "cam"))
        if row.get("error"):  # the score stands; its explanation failed
            body.append(f"<p class='error'>{html.escape(str(row['error']))}</p>")
    else:
        body.append(
            f"<p class='error'>error: {html.escape(str(row.get('error') or 'unknown'))}</p>"
        )
    attrs = f"class='card{' flagged' if flagged else ''}' data-status='{'ok' if ok else 'error'}'"
    return f"<article {attrs} data-item='{html.escape(item, quote=True)}'>{thumb}<div>{''.join(body)}</div></article>"


_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
header{display:flex;gap:2em;align-items:baseline;flex-wrap:wrap}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:1em}
.card{display:flex;gap:1em;border:1px solid #ccc;border-radius:6px;padding:.8em}
.card.flagged{border-color:#d62728;box-shadow:0 0 0 1px #d62728}
.thumb{width:128px;height:128px;object-fit:contain;background:#000;image-rendering:pixelated}
.cam{max-width:260px;display:block;margin-top:.5em}
.missing{display:flex;align-items:center;justify-content:center;color:#888;background:#eee}
h3{margin:0 0 .3em;font-size:1em;word-break:break-all}
.bar{display:flex;height:14px;width:240px;border:1px solid #999;margin:.3em 0}
.seg{display:block;height:100%}
.legend{font-size:.8em}.key{margin-right:.6em}.key i{display:inline-block;width:.8em;height:.8em;margin-right:.2em}
.ood,.error{color:#b00}.inlier{color:#080}
body.only-flagged .card:not(.flagged){display:none}
"""


def render_review(
    rows: Sequence[dict[str, Any]],
    out: Path,
    *,
    classes: Sequence[str],
    sites: Sequence[str],
    run_id: str,
    method: str,
) -> str:
    """The page's HTML for the final rows of a batch written into ``out``."""
    flagged = sum(1 for r in rows if r.get("status") != "ok" or r.get("ood_flag"))
    errors = sum(1 for r in rows if r.get("status") != "ok")
    cards = "\n".join(_card(r, out, classes, sites) for r in rows)
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; img-src data:; "
        "style-src 'unsafe-inline'; script-src 'unsafe-inline'\">"
        f"<title>sitefusion review: {html.escape(run_id)}</title><style>{_STYLE}</style></head>"
        "<body><header><h1>Scores for review</h1>"
        f"<p>run {html.escape(run_id)}, method {html.escape(method)}: {len(rows)} items, "
        f"<span id='n-flagged'>{flagged}</span> flagged ({errors} errors)</p>"
        "<label><input type='checkbox' id='only-flagged'> show flagged items only "
        "(out of distribution or error)</label></header>"
        f"<main class='cards'>{cards}</main>"
        "<script>document.getElementById('only-flagged').addEventListener('change',"
        "e=>document.body.classList.toggle('only-flagged',e.target.checked));</script>"
        "</body></html>\n"
    )


def write_review(
    rows: Sequence[dict[str, Any]],
    out: Path,
    *,
    classes: Sequence[str],
    sites: Sequence[str],
    run_id: str,
    method: str,
) -> Path:
    """Write ``review.html`` in ``out`` atomically; returns its path."""
    page = render_review(rows, out, classes=classes, sites=sites, run_id=run_id, method=method)
    return publish(write_text_atomic(out / REVIEW_NAME, page))
