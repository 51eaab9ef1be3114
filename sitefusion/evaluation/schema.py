"""The JSON Schema of the metrics document, and its validation.

``metrics_schema.json`` (shipped with the package) fixes the structure of what
:func:`~sitefusion.evaluation.harness.evaluate_predictions` returns. :func:`validate_metrics`
checks a document against it with ``jsonschema`` when that is installed (a dev extra), then checks
what a JSON Schema cannot say: every method covers the document's sites, every class-keyed table
its classes, and two-class documents carry the binary metrics.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from functools import cache
from importlib import resources
from typing import Any

from sitefusion.evaluation.errors import MetricsSchemaError
from sitefusion.evaluation.weighted import BINARY_METRICS

__all__ = ["load_metrics_schema", "validate_metrics"]

_SCHEMA_FILE = "metrics_schema.json"


@cache
def _schema_text() -> str:
    return resources.files("sitefusion.evaluation").joinpath(_SCHEMA_FILE).read_text("utf-8")


def load_metrics_schema() -> dict[str, Any]:
    """Return the metrics document's JSON Schema (a fresh dict each call)."""
    schema: dict[str, Any] = json.loads(_schema_text())
    return schema


def _path(parts: Any) -> str:
    return "/" + "/".join(str(p) for p in parts)


def _blocks(doc: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for name, method in doc["methods"].items():
        for site, block in method["per_site"].items():
            yield f"/methods/{name}/per_site/{site}", block
        yield f"/methods/{name}/overall", method["overall"]
    for site, by_method in doc["leave_one_site_out"].items():
        for name, block in by_method.items():
            yield f"/leave_one_site_out/{site}/{name}", block


def _check_keys(where: str, found: Any, expected: list[str]) -> None:
    if list(found) != expected:
        raise MetricsSchemaError(
            f"metrics document at {where}: expected keys {expected}, got {list(found)}"
        )


def _semantic_checks(doc: Mapping[str, Any]) -> None:
    sites, classes = list(doc["sites"]), list(doc["classes"])
    for name, method in doc["methods"].items():
        _check_keys(f"/methods/{name}/per_site", method["per_site"], sites)
    for where, block in _blocks(doc):
        for table in ("prevalence", "per_class_sensitivity", "per_class_auc"):
            _check_keys(f"{where}/{table}", block[table], classes)
        missing = [k for k in BINARY_METRICS if k not in block]
        if len(classes) == 2 and missing:
            raise MetricsSchemaError(
                f"metrics document at {where}: two-class task lacks metrics {missing}"
            )
    for section in ("paired", "margins", "attention"):
        unknown = sorted(set(doc[section]) - set(doc["methods"]))
        if unknown:
            raise MetricsSchemaError(
                f"metrics document at /{section}: methods {unknown} are not in /methods"
            )
    for name, by_site in doc["paired"].items():
        _check_keys(f"/paired/{name}", by_site, sites)
    calibrated = doc["calibration"].get("method")
    if calibrated is not None and calibrated not in doc["methods"]:
        raise MetricsSchemaError(
            f"metrics document at /calibration/method: {calibrated!r} is not in /methods"
        )


def validate_metrics(obj: Any) -> None:
    """Raise :class:`MetricsSchemaError` unless ``obj`` is a valid metrics document.

    The message names the JSON path of the first problem (``/methods/fusion/per_site/A/...``).
    Without ``jsonschema`` installed only the top-level keys, ``schema_version`` and the
    cross-field checks are verified.
    """
    if not isinstance(obj, Mapping):
        raise MetricsSchemaError(f"metrics document: expected an object, got {type(obj).__name__}")
    schema = load_metrics_schema()
    try:
        import jsonschema
    except ImportError:  # dev extra; fall back to the structural minimum
        missing = [k for k in schema["required"] if k not in obj]
        if missing:
            raise MetricsSchemaError(f"metrics document: missing keys {missing}") from None
        if obj.get("schema_version") != schema["properties"]["schema_version"]["const"]:
            raise MetricsSchemaError(
                f"metrics document: schema_version {obj.get('schema_version')!r}, expected 1"
            ) from None
    else:
        validator = jsonschema.Draft202012Validator(schema)
        error = jsonschema.exceptions.best_match(validator.iter_errors(obj))
        if error is not None:
            raise MetricsSchemaError(
                f"metrics document at {_path(error.absolute_path)}: {error.message}"
            )
    try:
        _semantic_checks(obj)
    except (KeyError, TypeError, AttributeError) as err:
        raise MetricsSchemaError(f"metrics document: malformed ({err!r})") from err
