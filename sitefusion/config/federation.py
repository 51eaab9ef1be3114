"""What a federated run refuses of a config, and the config it trains and records.

A federation has no images in one place: no class list can be read from labels, no pooled
normalizer, no pooled model, stacking or random-feature control, and central fine-tuning has its
federated form (``federated.finetune_rounds``). The checks live with the schema so that
``sitefusion federate`` refuses a config before it starts any process.
"""

from __future__ import annotations

from sitefusion.config.base import replace
from sitefusion.config.schema import Config
from sitefusion.errors import ConfigError

__all__ = ["federated_config"]


def federated_config(cfg: Config) -> Config:
    """The config a federated run trains and records: the product fusion head (fine-tuned end to
    end only through ``federated.finetune_rounds``), FedAvg, one-shot weight and output
    averaging, the local experts. Pooled training, stacking and the random-feature control need
    images in one place.

    Raises:
        ConfigError: no ``data.classes``, ``normalization.unseen_policy: pooled`` or a central
            ``fusion.finetune_epochs``, naming the file and what to set instead.
    """
    where = cfg.source_path or "<config>"
    if not cfg.data.classes:
        raise ConfigError(
            f"{where}: field 'data.classes' is empty; a federation needs the class "
            "list in the config (the coordinator never sees the sites' labels)"
        )
    if cfg.normalization.unseen_policy == "pooled":
        raise ConfigError(
            f"{where}: field 'normalization.unseen_policy' is 'pooled'; a federation "
            "has no pooled normalizer (no images in one place): use 'nearest' or 'self'"
        )
    if cfg.fusion.finetune_epochs:
        raise ConfigError(
            f"{where}: field 'fusion.finetune_epochs' is {cfg.fusion.finetune_epochs};"
            " it sets the central fine-tuning: set it to 0, and federated.finetune_rounds for "
            "the federated one"
        )
    baselines = replace(
        cfg.baselines, pooled=False, stacking=False, random_features=False, fedavg=True
    )
    fusion = replace(cfg.fusion, modes=(cfg.fusion.modes[0],))
    return replace(cfg, baselines=baselines, fusion=fusion)
