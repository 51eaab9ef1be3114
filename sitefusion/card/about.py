"""What only the people who publish a model can say: an optional YAML file read into the card.

A run directory knows its numbers, not what ``mel`` means to a clinician, where the images came
from or under which licence. ``sitefusion card --about FILE`` reads these from a strict YAML
file (unknown keys are errors with a "did you mean"); everything else in the card stays
computed from the run. Keys (all optional):

* ``title`` (text), ``description`` (text): the card's title and a one-paragraph summary;
* ``class_names``: ``{class: readable name}`` for classes of the run;
* ``primary_uses``, ``primary_users``, ``out_of_scope``: lists of text replacing the defaults;
* ``data_source``, ``license``, ``citation``: text about the training data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sitefusion.config import parse_yaml
from sitefusion.errors import ConfigError, did_you_mean

__all__ = ["ABOUT_KEYS", "About", "read_about"]

_TEXT = ("title", "description", "data_source", "license", "citation")
_LISTS = ("primary_uses", "primary_users", "out_of_scope")
ABOUT_KEYS: tuple[str, ...] = (*_TEXT, "class_names", *_LISTS)


@dataclass(frozen=True)
class About:
    """The publisher's statements (see the module docstring); empty where not given."""

    text: dict[str, str] = field(default_factory=dict)
    class_names: dict[str, str] = field(default_factory=dict)
    lists: dict[str, list[str]] = field(default_factory=dict)


def _text(value: Any, source: str, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{source}: field {key!r} is {value!r}; expected non-empty text")
    return value.strip()


def read_about(path: str | Path, classes: Sequence[str]) -> About:
    """Read and check an about file for a run with ``classes``.

    Raises:
        ConfigError: unreadable file, unknown key, wrong type, or a class name the run lacks;
            the message names the file, the field and the value.
    """
    source = str(path)
    try:
        raw = parse_yaml(Path(path).read_text(encoding="utf-8"), source)
    except OSError as err:
        raise ConfigError(f"{source}: cannot read the about file ({err})") from err
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of {', '.join(ABOUT_KEYS)}")
    for key in raw:
        if key not in ABOUT_KEYS:
            raise ConfigError(
                f"{source}: unknown field {key!r}; valid: {', '.join(ABOUT_KEYS)}"
                f"{did_you_mean(str(key), ABOUT_KEYS)}"
            )
    text = {k: _text(raw[k], source, k) for k in _TEXT if k in raw}
    lists: dict[str, list[str]] = {}
    for key in _LISTS:
        if key in raw:
            value = raw[key]
            if not isinstance(value, list) or not value:
                raise ConfigError(f"{source}: field {key!r} is {value!r}; expected a list of text")
            lists[key] = [_text(v, source, f"{key}[{i}]") for i, v in enumerate(value)]
    names = raw.get("class_names") or {}
    if not isinstance(names, dict):
        raise ConfigError(f"{source}: field 'class_names' is {names!r}; expected a mapping")
    for cls, name in names.items():
        if cls not in classes:
            raise ConfigError(
                f"{source}: field 'class_names' names class {cls!r}, which the run does not "
                f"have; its classes: {', '.join(classes)}{did_you_mean(str(cls), classes)}"
            )
        _text(name, source, f"class_names.{cls}")
    return About(text, {str(k): str(v).strip() for k, v in names.items()}, lists)
