"""The strict YAML reader of config files: PyYAML's safe loader without aliases, repeated keys
or object tags, and with every failure one :class:`~sitefusion.errors.ConfigError` naming the
file (and the line and column where YAML has them).

An alias (``*name``) can expand a kilobyte file into gigabytes or refer to itself; a repeated
key silently drops the earlier value; a ``!!python/...`` tag would construct objects. A config
needs none of them. Non-finite numbers (``.nan``, ``.inf``) parse here and are refused by the
schema, which names the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from sitefusion.errors import ConfigError

__all__ = ["parse_yaml", "read_config_file"]


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader without aliases and without repeated keys.

    An alias (``*name``) can expand a kilobyte file into gigabytes or refer to itself; a repeated
    key silently drops the earlier value. A config needs neither, so both are refused.
    """

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.MarkedYAMLError(
                problem=f"YAML aliases (*{event.anchor}) are not allowed in a config",
                problem_mark=event.start_mark,
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.MarkedYAMLError(
                    problem=f"the key {key!r} appears twice in one mapping (line "
                    f"{seen[key].line + 1} and line {key_node.start_mark.line + 1})",
                    problem_mark=key_node.start_mark,
                )
            if isinstance(key, (str, int, float, bool)):
                seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str, source: str) -> Any:
    """Parse config text with the safe loader, refusing aliases, repeated keys and tags that
    would construct objects; any problem is one :class:`ConfigError` naming ``source``."""
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as err:
        where = ""
        mark = getattr(err, "problem_mark", None)
        if mark is not None:
            where = f" (line {mark.line + 1}, column {mark.column + 1})"
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{source}: not a valid config{where}: {problem}") from err
    except RecursionError as err:
        raise ConfigError(f"{source}: the YAML is nested too deeply") from err


def read_config_file(path: str | Path) -> Any:
    """The parsed YAML of a config file (or a run's ``config.yaml``), with every failure — not
    readable, not UTF-8, not valid or not safe YAML — one :class:`ConfigError` naming the file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"{p}: not UTF-8 text (byte {err.start} is {err.object[err.start : err.start + 1]!r}); "
            "save the config as UTF-8"
        ) from err
    except OSError as err:
        raise ConfigError(f"{p}: cannot read the config file ({err.strerror or err})") from err
    return parse_yaml(text, str(p))
