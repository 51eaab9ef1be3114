#!/usr/bin/env python3
"""Run a sitefusion model exported to ONNX, without sitefusion.

Needs numpy and onnxruntime; Pillow only to read PNG/JPEG (a ``.npy`` array needs nothing else).
Usage::

    python run_model.py IMAGE [IMAGE ...] [--site SITE] [--model DIR]

Prints one JSON line per image: the class probabilities (temperature-scaled, as
``sitefusion score`` writes them), the predicted class, the weight of each site's expert, and
which site's normalization was used and why. The steps follow ``preprocessing.json`` (format
``sitefusion.onnx_preprocessing``, version 1) exactly as sitefusion's scoring does them:

1. read: ``.npy`` as stored (``[C, *S]``, or ``[*S]`` for one channel); PNG/JPEG with
   Pillow, EXIF orientation applied, grey modes as one channel with their values, every other
   mode as RGB (alpha dropped), values 0..255 as float;
2. resize to ``spatial_size``: area averaging when no axis grows, else (bi)linear with
   half-pixel centres (``align_corners=False``);
3. normalize with the site's parameters (``--site``); a site the model does not know follows
   ``unseen_policy`` (``nearest``: the site whose intensity percentiles are closest;
   ``pooled``: the pooled parameters);
4. run ``model.onnx``: input ``image [B, C, *S]`` float32, outputs ``probabilities [B, K]``
   and ``weights [B, E]``.

This file is copied verbatim by ``sitefusion export``; it imports nothing from sitefusion.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "sitefusion.onnx_preprocessing"
VERSION = 1

_RGB_TO_XYZ = np.array(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ]
)
_XYZ_TO_RGB = np.linalg.inv(_RGB_TO_XYZ)
_WHITE_D65 = np.array([0.95047, 1.0, 1.08883])
_DELTA = 6.0 / 29.0
_GREY_MODES = ("L", "I", "F", "I;16", "I;16L", "I;16B", "I;16N")


class ModelError(Exception):
    """An input or a model file the runner cannot use; the message names it."""


# ----------------------------------------------------------------------------------- reading
def read_image(path: Path) -> np.ndarray:
    """Channel-first float32 ``[C, *S]`` of a ``.npy``, PNG or JPEG file."""
    if path.suffix.lower() == ".npy":
        array = np.load(path, allow_pickle=False)
        return np.asarray(array, dtype=np.float32)
    try:
        from PIL import Image, ImageOps
    except ImportError as err:
        raise ModelError(f"{path}: reading PNG/JPEG needs Pillow (pip install pillow)") from err
    try:
        with Image.open(path) as opened:
            opened.load()
            image = ImageOps.exif_transpose(opened)
            if image.mode in ("1", "LA", "La"):
                image = image.convert("L")
            if image.mode in _GREY_MODES:
                return np.asarray(image).astype(np.float32)[None]
            if image.mode != "RGB":
                image = image.convert("RGB")
            return np.asarray(image).astype(np.float32).transpose(2, 0, 1)
    except OSError as err:
        raise ModelError(f"{path}: not a readable image ({err})") from err


# ---------------------------------------------------------------------------------- resizing
def _area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``[n_out, n_in]`` weights of adaptive average pooling (windows ``floor``..``ceil``)."""
    m = np.zeros((n_out, n_in))
    for i in range(n_out):
        start = (i * n_in) // n_out
        stop = -((-(i + 1) * n_in) // n_out)
        m[i, start:stop] = 1.0 / (stop - start)
    return m


def _linear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``[n_out, n_in]`` weights of linear interpolation with half-pixel centres."""
    m = np.zeros((n_out, n_in))
    scale = n_in / n_out
    for i in range(n_out):
        src = max((i + 0.5) * scale - 0.5, 0.0)
        i0 = min(int(np.floor(src)), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        frac = src - i0
        m[i, i0] += 1.0 - frac
        m[i, i1] += frac
    return m


def resize(array: np.ndarray, size: list[int]) -> np.ndarray:
    """``[C, *S]`` -> ``[C, *size]`` (area when no axis grows, else linear)."""
    if list(array.shape[1:]) == list(size):
        return array
    shrinking = all(s >= t for s, t in zip(array.shape[1:], size, strict=True))
    out = np.asarray(array, dtype=np.float64)
    for axis, (n_in, n_out) in enumerate(zip(array.shape[1:], size, strict=True), start=1):
        m = _area_matrix(n_in, n_out) if shrinking else _linear_matrix(n_in, n_out)
        out = np.moveaxis(np.tensordot(m, np.moveaxis(out, axis, 0), axes=(1, 0)), 0, axis)
    return out.astype(np.float32)


# ----------------------------------------------------------------------------- normalization
def _per_channel(values: Any, ndim: int) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).reshape((-1,) + (1,) * (ndim - 1))


def _rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    c = np.clip(rgb, 0.0, 1.0)
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = np.tensordot(_RGB_TO_XYZ, linear, axes=(1, 0)) / _per_channel(_WHITE_D65, c.ndim)
    f = np.where(xyz > _DELTA**3, np.cbrt(xyz), xyz / (3 * _DELTA**2) + 4.0 / 29.0)
    return np.stack([116.0 * f[1] - 16.0, 500.0 * (f[0] - f[1]), 200.0 * (f[1] - f[2])])


def _lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    fy = (lab[0] + 16.0) / 116.0
    f = np.stack([fy + lab[1] / 500.0, fy, fy - lab[2] / 200.0])
    xyz = np.where(f > _DELTA, f**3, 3 * _DELTA**2 * (f - 4.0 / 29.0))
    xyz = xyz * _per_channel(_WHITE_D65, lab.ndim)
    linear = np.clip(np.tensordot(_XYZ_TO_RGB, xyz, axes=(1, 0)), 0.0, 1.0)
    rgb = np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)
    return np.asarray(np.clip(rgb, 0.0, 1.0))


def _piecewise_linear(values: np.ndarray, xp: np.ndarray, fp: np.ndarray) -> np.ndarray:
    knots, inverse = np.unique(xp, return_inverse=True)
    targets = np.bincount(inverse, weights=fp) / np.bincount(inverse)
    if knots.size == 1:
        return np.full_like(values, targets[0])
    out = np.interp(values, knots, targets)
    below, above = values < knots[0], values > knots[-1]
    slope_low = (targets[1] - targets[0]) / (knots[1] - knots[0])
    slope_high = (targets[-1] - targets[-2]) / (knots[-1] - knots[-2])
    out[below] = targets[0] + (values[below] - knots[0]) * slope_low
    out[above] = targets[-1] + (values[above] - knots[-1]) * slope_high
    return out


def normalize(image: np.ndarray, record: dict[str, Any]) -> np.ndarray:
    """One site's normalization (``record``: that site's normalizer JSON) of ``[C, *S]``."""
    x = np.asarray(image, dtype=np.float64)
    kind, params, fitted = record["kind"], record["params"], record["fitted"]
    n = x.ndim
    if kind == "zscore":
        bounds = np.asarray(fitted["bounds_"], dtype=np.float64)
        clipped = np.clip(x, _per_channel(bounds[:, 0], n), _per_channel(bounds[:, 1], n))
        out = (clipped - _per_channel(fitted["mean_"], n)) / _per_channel(fitted["std_"], n)
    elif kind == "percentile":
        bounds = np.asarray(fitted["bounds_"], dtype=np.float64)
        low = _per_channel(bounds[:, 0], n)
        out = (x - low) / _per_channel(bounds[:, 1] - bounds[:, 0], n)
        out = np.clip(out, 0.0, 1.0) if params["clip"] else out
    elif kind == "histogram":
        flat = x.reshape(x.shape[0], -1)
        own = np.percentile(flat, params["landmarks"], axis=1).T
        standard = np.asarray(fitted["standard_landmarks_"], dtype=np.float64)
        out = np.stack(
            [_piecewise_linear(flat[c], own[c], standard[c]) for c in range(flat.shape[0])]
        )
        if params["rescale"]:
            s_min, s_max = params["standard_range"]
            out = (out - s_min) / (s_max - s_min)
        out = out.reshape(x.shape)
    elif kind == "colour":
        lab = _rgb_to_lab(x / float(fitted["scale_"]))
        matched = (lab - _per_channel(fitted["mean_"], n)) / _per_channel(fitted["std_"], n)
        matched = matched * _per_channel(params["reference_std"], n)
        matched = matched + _per_channel(params["reference_mean"], n)
        rgb = _lab_to_rgb(matched)
        out = (rgb - _per_channel(fitted["output_mean_"], n)) / _per_channel(
            fitted["output_std_"], n
        )
    else:
        raise ModelError(f"preprocessing.json: normalizer kind {kind!r} is not known here")
    return np.asarray(out, dtype=np.float32)


def choose_site(image: np.ndarray, site: str | None, pre: dict[str, Any]) -> tuple[str, str]:
    """``(site whose parameters to use, policy)`` for an image of ``site`` (or unknown)."""
    sites: dict[str, Any] = pre["normalizers"]
    if site is not None and site in sites:
        return site, "known"
    policy = pre["unseen_policy"]
    if policy == "nearest":
        levels = pre["signature_levels"]
        flat = np.asarray(image, dtype=np.float64).reshape(image.shape[0], -1)
        own = np.percentile(flat, levels, axis=1).T
        distances = {
            s: float(np.mean(np.abs(own - np.asarray(r["fitted"]["signature_"]))))
            for s, r in sites.items()
        }
        return min(distances, key=lambda s: distances[s]), "nearest"
    if policy == "pooled":
        return "<pooled>", "pooled"
    raise ModelError(
        f"unseen-site policy {policy!r} needs sitefusion; pass --site with one of "
        f"{', '.join(sites)}"
    )


def preprocess(
    image: np.ndarray, site: str | None, pre: dict[str, Any]
) -> tuple[np.ndarray, str, str]:
    """Raw ``[C, *S]`` -> normalized float32 ``[C, *spatial_size]``, site used, policy."""
    if image.ndim == len(pre["spatial_size"]):
        image = image[None]
    if image.shape[0] != pre["channels"] or image.ndim != len(pre["spatial_size"]) + 1:
        raise ModelError(
            f"image has shape {list(image.shape)}; the model takes {pre['channels']} channel(s) "
            f"of a {len(pre['spatial_size'])}D image"
        )
    conformed = resize(image, pre["spatial_size"])
    used, policy = choose_site(conformed, site, pre)
    record = pre["pooled"] if used == "<pooled>" else pre["normalizers"][used]
    return normalize(conformed, record), used, policy


# ------------------------------------------------------------------------------------- model
class ExportedModel:
    """``model.onnx`` and ``preprocessing.json`` of one export folder."""

    def __init__(self, folder: Path) -> None:
        import onnxruntime as ort

        self.folder = folder
        pre_path = folder / "preprocessing.json"
        try:
            self.pre: dict[str, Any] = json.loads(pre_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise ModelError(f"{pre_path}: unreadable ({err})") from err
        if self.pre.get("format") != FORMAT or self.pre.get("version") != VERSION:
            raise ModelError(
                f"{pre_path}: format {self.pre.get('format')!r} version "
                f"{self.pre.get('version')!r}; this runner reads {FORMAT} version {VERSION}"
            )
        self.session = ort.InferenceSession(
            str(folder / "model.onnx"), providers=["CPUExecutionProvider"]
        )

    def run(self, normalized: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities ``[B, K]`` and expert weights ``[B, E]`` of normalized ``[B, C, *S]``."""
        probs, weights = self.session.run(
            ["probabilities", "weights"], {"image": np.ascontiguousarray(normalized, np.float32)}
        )
        return np.asarray(probs), np.asarray(weights)

    def predict_file(self, path: Path, site: str | None = None) -> dict[str, Any]:
        """The JSON-safe result of one image file."""
        x, used, policy = preprocess(read_image(path), site, self.pre)
        probs, weights = self.run(x[None])
        classes, experts = self.pre["classes"], self.pre["experts"]
        return {
            "input": str(path),
            "prediction": classes[int(np.argmax(probs[0]))],
            "probabilities": {c: float(p) for c, p in zip(classes, probs[0], strict=True)},
            "weights": {s: float(w) for s, w in zip(experts, weights[0], strict=True)},
            "norm_site": used,
            "norm_policy": policy,
        }


def main(argv: list[str] | None = None) -> int:
    """Command line: one JSON line per image; exit 1 when any image failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", type=Path, help=".npy, PNG or JPEG files")
    parser.add_argument("--site", default=None, help="site of every image (default: unknown)")
    parser.add_argument(
        "--model", type=Path, default=Path(__file__).resolve().parent, help="export folder"
    )
    args = parser.parse_args(argv)
    try:
        model = ExportedModel(args.model)
    except ModelError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    failed = 0
    for path in args.images:
        try:
            print(json.dumps(model.predict_file(path, args.site)))
        except (ModelError, OSError, ValueError) as err:
            print(f"error: {path}: {err}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
