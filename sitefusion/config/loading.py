"""Reading and writing a whole config: :func:`load_config` (a YAML file plus ``--set``
overrides), :func:`config_from_dict` (plain data: a run's stored ``config.yaml``, a federated
site's copy of the coordinator's), :func:`config_to_dict` (the plain, YAML/JSON-safe view) and
:func:`check_paths` (the files a new run reads besides its data)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from sitefusion.config.base import validate
from sitefusion.config.overrides import merge_overrides, parse_overrides
from sitefusion.config.schema import PRETRAINED_IMAGENET, Config
from sitefusion.config.yaml_loader import read_config_file
from sitefusion.errors import ConfigError

__all__ = ["check_paths", "config_from_dict", "config_to_dict", "load_config"]


def config_from_dict(data: Mapping[str, Any], source: str = "<config>") -> Config:
    """Build a :class:`Config` from plain data (as read from YAML or JSON).

    Raises:
        ConfigError: naming ``source``, the dotted field, the value and what was expected.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{source}: expected a mapping at the top level, got {type(data).__name__}"
        )
    cfg = validate(Config, data, source)
    cfg._source_path = source
    return cfg


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> Config:
    """Read a YAML config, apply ``KEY=VALUE`` overrides and return the frozen :class:`Config`.

    Everything a run would refuse about the config is refused here, before anything is
    written, and so is an ``expert.pretrained`` file that does not exist (:func:`check_paths`).
    """
    p = Path(path)
    data = read_config_file(p)
    if data is None:
        # Every field has a default, so an empty file would silently be a run of the built-in
        # defaults: a config truncated by a failed copy, or the wrong file, looks like that.
        # Whoever means the defaults writes so: "{}".
        raise ConfigError(
            f"{p}: the config file is empty (no settings); expected a mapping of sections such "
            "as data:, training:, fusion: (see configs/demo.yaml), or {} for every default"
        )
    if not isinstance(data, Mapping):
        raise ConfigError(f"{p}: expected a mapping at the top level, got {type(data).__name__}")
    merged = merge_overrides(data, parse_overrides(overrides))
    cfg = config_from_dict(merged, str(p))
    check_paths(cfg)
    return cfg


def check_paths(cfg: Config) -> None:
    """Check that the files a new run reads from outside its data exist.

    Only for a config that starts a run (:func:`load_config`): a run directory's stored config
    is read back without these files, which the run no longer needs.

    Raises:
        ConfigError: ``expert.pretrained`` names a file that does not exist.
    """
    pretrained = cfg.expert.pretrained
    if pretrained not in (None, PRETRAINED_IMAGENET) and not Path(pretrained).is_file():
        raise ConfigError(
            f"{cfg.source_path}: field 'expert.pretrained' is {pretrained!r}, which is not an "
            f"existing file (relative paths are taken from {Path.cwd()}); expected null, "
            f"{PRETRAINED_IMAGENET!r} or the path of a .safetensors file"
        )


def config_to_dict(cfg: Any) -> Any:
    """Plain, YAML/JSON-serialisable view of a config or a section (tuples become lists), in
    field order; ``source_path`` is not part of it."""
    if isinstance(cfg, BaseModel):
        return {name: config_to_dict(getattr(cfg, name)) for name in type(cfg).model_fields}
    if isinstance(cfg, Mapping):
        return {str(k): config_to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, (tuple, list)):
        return [config_to_dict(v) for v in cfg]
    return cfg
