"""``--set KEY=VALUE`` overrides: parsed as YAML scalars or flow collections (never evaluated as
code) into a nested mapping, and merged over a config file's mapping before it is validated,
so an override is checked exactly as the same value in the file would be."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sitefusion.config.yaml_loader import parse_yaml
from sitefusion.errors import ConfigError

__all__ = ["merge_overrides", "parse_overrides"]


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """Turn ``["data.root=/x", "training.epochs=3"]`` into a nested mapping.

    Values are parsed as YAML scalars or flow collections (``[64, 64]``), never evaluated as code.
    """
    result: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected KEY=VALUE, for example data.root=/data")
        key, raw = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ConfigError(f"override {item!r}: the key is empty")
        value = parse_yaml(raw, f"override {item!r}") if raw.strip() else ""
        node = result
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(
                    f"override {item!r}: '{part}' is set both as a value and a section"
                )
        node[parts[-1]] = value
    return result


def merge_overrides(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` merged in: sections merge key by key, any other value replaces."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge_overrides(dict(out[key]), value)
        else:
            out[key] = value
    return out
