"""Typed, frozen configuration loaded once from YAML: one pydantic schema, checked in one place.

``load_config(path, overrides)`` reads a YAML file, applies ``--set a.b=value`` overrides and
validates the result into a frozen :class:`Config`. Unknown keys, wrong types, out-of-range
values, invalid choices, parameters a backbone or normalizer does not take and contradictory
sections raise :class:`~sitefusion.errors.ConfigError` naming the file, the dotted field, the
value and what was expected (with a "did you mean"). No code is evaluated from a config.

- :mod:`~sitefusion.config.schema`: the models (:class:`Config` and its sections), their bounds
  (:data:`LIMITS`) and validators.
- :mod:`~sitefusion.config.rules`: the checks across sections and those only the lower layers
  know (backbone and normalizer parameters), which the schema calls.
- :mod:`~sitefusion.config.messages`: pydantic's errors worded as sitefusion's.
- :mod:`~sitefusion.config.base`: the strict, frozen base model and :func:`replace`.
- :mod:`~sitefusion.config.yaml_loader`: the strict YAML reader.
- :mod:`~sitefusion.config.overrides`: ``--set`` overrides.
- :mod:`~sitefusion.config.loading`: :func:`load_config`, :func:`config_from_dict`,
  :func:`config_to_dict`, :func:`check_paths`.
- :mod:`~sitefusion.config.federation`: :func:`federated_config`.
"""

from sitefusion.config.base import ConfigModel, replace
from sitefusion.config.federation import federated_config
from sitefusion.config.loading import check_paths, config_from_dict, config_to_dict, load_config
from sitefusion.config.overrides import merge_overrides, parse_overrides
from sitefusion.config.schema import (
    LIMITS,
    MAX_SPATIAL_ELEMENTS,
    PRETRAINED_IMAGENET,
    BaselinesConfig,
    Config,
    DataConfig,
    EvaluationConfig,
    ExpertConfig,
    ExpertStart,
    FederatedConfig,
    FusionConfig,
    FusionMode,
    NormalizationConfig,
    NormalizerKind,
    ScoringConfig,
    SplitConfig,
    SyntheticConfig,
    TrainingConfig,
    UnseenPolicy,
)
from sitefusion.config.yaml_loader import parse_yaml, read_config_file

__all__ = [
    "LIMITS",
    "MAX_SPATIAL_ELEMENTS",
    "PRETRAINED_IMAGENET",
    "BaselinesConfig",
    "Config",
    "ConfigModel",
    "DataConfig",
    "EvaluationConfig",
    "ExpertConfig",
    "ExpertStart",
    "FederatedConfig",
    "FusionConfig",
    "FusionMode",
    "NormalizationConfig",
    "NormalizerKind",
    "ScoringConfig",
    "SplitConfig",
    "SyntheticConfig",
    "TrainingConfig",
    "UnseenPolicy",
    "check_paths",
    "config_from_dict",
    "config_to_dict",
    "federated_config",
    "load_config",
    "merge_overrides",
    "parse_overrides",
    "parse_yaml",
    "read_config_file",
    "replace",
]
