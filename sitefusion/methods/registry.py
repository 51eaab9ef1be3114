"""Which methods exist, and which a configuration trains.

Every method family is declared once in :mod:`sitefusion.evaluation.method_families` (its
names, the config switch that trains it, its description, its report order); this module binds
each family to its :class:`~sitefusion.methods.base.Method` class and trains the families whose
switch is on. A new method is one declaration there, one ``Method`` subclass here in
``sitefusion/methods/`` (overriding :meth:`~sitefusion.methods.base.Method.configured` when it
needs arguments or builds several methods) and one line in :data:`METHOD_CLASSES`.
"""

from __future__ import annotations

from collections.abc import Sequence

from sitefusion.config import Config
from sitefusion.evaluation.method_families import (
    FEDAVG,
    FUSION,
    LOCAL,
    OUTPUT_AVERAGE,
    POOLED,
    RANDOM_FEATURES,
    STACKING,
    WEIGHT_AVERAGE,
    MethodFamily,
    method_family,
)
from sitefusion.methods.base import Method
from sitefusion.methods.fedavg import FedAvgMethod
from sitefusion.methods.fusion import FusionMethod
from sitefusion.methods.local import LocalExpert
from sitefusion.methods.output_average import OutputAverage
from sitefusion.methods.pooled import PooledMethod
from sitefusion.methods.random_features import RandomFeaturesControl
from sitefusion.methods.stacking import StackingMethod
from sitefusion.methods.weight_average import WeightAverage

__all__ = ["METHOD_CLASSES", "configured_methods", "switched_on"]

METHOD_CLASSES: dict[str, type[Method]] = {
    POOLED.name: PooledMethod,
    FEDAVG.name: FedAvgMethod,
    FUSION.name: FusionMethod,
    RANDOM_FEATURES.name: RandomFeaturesControl,
    STACKING.name: StackingMethod,
    WEIGHT_AVERAGE.name: WeightAverage,
    LOCAL.name: LocalExpert,
    OUTPUT_AVERAGE.name: OutputAverage,
}
"""The class of every declared method family, by the family's name, in the order a run trains
them: pooled training and the FedAvg baseline first (they read images, not the feature cache);
then the fusion heads, the product (first) mode first; the random-feature control; stacking;
weight averaging; and the methods that need no training (each local expert, output averaging).
"""


def switched_on(cfg: Config, family: MethodFamily) -> bool:
    """Whether ``cfg`` trains ``family``: the value at its switch's dotted path is true (a
    boolean that is on, a list that is not empty); a family without a switch always is."""
    if family.switch is None:
        return True
    value: object = cfg
    for part in family.switch.split("."):
        value = getattr(value, part)
    return bool(value)


def configured_methods(cfg: Config, sites: Sequence[str]) -> list[Method]:
    """The methods ``cfg`` trains for experts of ``sites``, in the order they are trained
    (:data:`METHOD_CLASSES`): every family whose switch is on, each with the methods its class
    builds for ``cfg`` (:meth:`~sitefusion.methods.base.Method.configured`)."""
    methods: list[Method] = []
    for name, cls in METHOD_CLASSES.items():
        if switched_on(cfg, method_family(name)):
            methods += cls.configured(cfg, sites)
    return methods
