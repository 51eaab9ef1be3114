"""Which methods exist, and which a configuration trains.

A new method is one file with a :class:`~sitefusion.methods.base.Method` subclass and one line in
:data:`METHOD_CLASSES` (and, if a config decides whether it runs, one line in
:func:`configured_methods`).
"""

from __future__ import annotations

from collections.abc import Sequence

from sitefusion.config import Config
from sitefusion.methods.base import Method
from sitefusion.methods.fedavg import FedAvgMethod
from sitefusion.methods.fusion import FusionMethod
from sitefusion.methods.local import LocalExpert
from sitefusion.methods.output_average import OutputAverage
from sitefusion.methods.pooled import PooledMethod
from sitefusion.methods.random_features import RandomFeaturesControl
from sitefusion.methods.stacking import StackingMethod
from sitefusion.methods.weight_average import WeightAverage

__all__ = ["METHOD_CLASSES", "configured_methods"]

#: Every kind of method, by the name its family is known by.
METHOD_CLASSES: dict[str, type[Method]] = {
    "fusion": FusionMethod,
    "random_features": RandomFeaturesControl,
    "pooled": PooledMethod,
    "fedavg": FedAvgMethod,
    "local": LocalExpert,
    "output_average": OutputAverage,
    "weight_average": WeightAverage,
    "stacking": StackingMethod,
}


def configured_methods(cfg: Config, sites: Sequence[str]) -> list[Method]:
    """The methods ``cfg`` trains for experts of ``sites``, in the order they are trained.

    Pooled training and the FedAvg baseline first (they read images, not the feature cache); then the fusion heads, the
    product (first) mode first; the random-feature control; stacking; weight averaging; and the
    methods that need no training (each local expert, output averaging).
    """
    product = cfg.fusion.modes[0]
    methods: list[Method] = []
    if cfg.baselines.pooled:
        methods.append(PooledMethod())
    if cfg.baselines.fedavg:
        methods.append(FedAvgMethod())
    methods += [FusionMethod(mode, product=mode == product) for mode in cfg.fusion.modes]
    if cfg.baselines.random_features:
        methods.append(RandomFeaturesControl(product))
    if cfg.baselines.stacking:
        methods.append(StackingMethod())
    if cfg.baselines.weight_average:
        methods.append(WeightAverage())
    methods += [LocalExpert(site, i) for i, site in enumerate(sites)]
    if cfg.baselines.output_average:
        methods.append(OutputAverage())
    return methods
