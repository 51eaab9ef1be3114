"""A normalizer's artifact on disk: strict JSON, written atomically, read with named errors."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from sitefusion.atomic import write_text_atomic
from sitefusion.errors import ArtifactError

__all__ = ["jsonable", "read_json_artifact", "write_json_atomic"]


def jsonable(value: object) -> Any:
    """``value`` with numpy arrays, tuples and numpy scalars turned into JSON's lists and numbers."""
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, tuple | list):
        return [jsonable(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


# ------------------------------------------------------------------------------ artifacts


def write_json_atomic(path: str | os.PathLike[str], payload: Mapping[str, Any]) -> Path:
    """Write ``payload`` as JSON to ``path`` atomically (temporary file, fsync, ``os.replace``).

    Non-finite floats are refused (``ValueError``) so the file is always strict JSON.
    Returns the path written.
    """
    return write_text_atomic(path, json.dumps(payload, indent=2, allow_nan=False) + "\n")


def read_json_artifact(path: str | os.PathLike[str], what: str) -> dict[str, Any]:
    """Read a JSON object from ``path``; raise :class:`ArtifactError` naming the file otherwise."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise ArtifactError(f"{path}: cannot read {what}: {err}") from err
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as err:
        raise ArtifactError(f"{path}: malformed JSON in {what}: {err}") from err
    if not isinstance(payload, dict):
        raise ArtifactError(f"{path}: {what} must be a JSON object, found {type(payload).__name__}")
    return payload
