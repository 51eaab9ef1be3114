"""The one declaration of every method family: its method names, the config switch that trains it,
its one-line description and its place in reports.

Every layer that names methods reads them from here: evaluation's valid names and report order
(:mod:`~sitefusion.evaluation.predictions`), reporting's legend
(:mod:`~sitefusion.reporting.formatting`), and the methods registry, which binds each family to
its :class:`~sitefusion.methods.base.Method` class and trains the families whose switch is on
(:mod:`~sitefusion.methods.registry`). A new method is one declaration here, one ``Method``
subclass in ``sitefusion/methods/`` and one line in ``METHOD_CLASSES``.

The declarations live in ``evaluation`` because it is the lowest layer that every reader may
import (methods, reporting and workflows sit above it), and because evaluation's input contract,
the :class:`~sitefusion.evaluation.predictions.PredictionSet`, is keyed by these names. The
module is plain data: it imports nothing of sitefusion but the errors.
"""

from __future__ import annotations

from dataclasses import dataclass

from sitefusion.errors import UnknownChoiceError

__all__ = [
    "FEDAVG",
    "FUSION",
    "LOCAL",
    "METHOD_FAMILIES",
    "OUTPUT_AVERAGE",
    "POOLED",
    "RANDOM_FEATURES",
    "STACKING",
    "WEIGHT_AVERAGE",
    "MethodFamily",
    "MethodVariant",
    "family_of_method",
    "method_family",
    "report_order",
]


@dataclass(frozen=True)
class MethodVariant:
    """One method of a family whose switch is a list: ``name`` is trained when the list holds
    ``value`` (the fusion head ``fusion_concat`` when ``fusion.modes`` holds ``concat``)."""

    name: str
    value: str
    description: str


@dataclass(frozen=True)
class MethodFamily:
    """A family of methods, built by one :class:`~sitefusion.methods.base.Method` class.

    Attributes:
        name: the family's name (the key of ``METHOD_CLASSES``), which is also the method's name
            for a family of one method.
        switch: the config field that decides whether a run trains the family, as a dotted path:
            a boolean (``baselines.pooled``), a list whose values each train one variant
            (``fusion.modes``), or ``None``: every run trains it.
        description: one line for the report's legend; for a per-site family ``{site}`` stands
            for the site.
        variants: the methods of a family with several (the fusion's modes); empty otherwise.
        per_site: one method ``<name>:<site>`` per expert site (the local experts).
    """

    name: str
    switch: str | None
    description: str
    variants: tuple[MethodVariant, ...] = ()
    per_site: bool = False

    @property
    def method_names(self) -> tuple[str, ...]:
        """The names of the family's methods; empty for a per-site family (:meth:`site_method`)."""
        if self.per_site:
            return ()
        return tuple(v.name for v in self.variants) or (self.name,)

    def site_method(self, site: str) -> str:
        """The method name of ``site`` in a per-site family: ``<name>:<site>``."""
        return f"{self.name}:{site}"

    def holds(self, method: str) -> bool:
        """Whether ``method`` is one of the family's method names (any site, if per site)."""
        if self.per_site:
            return method.startswith(f"{self.name}:")
        return method in self.method_names

    def describe(self, method: str) -> str:
        """The one-line description of ``method``, one of the family's names."""
        if self.per_site:
            return self.description.format(site=method.split(":", 1)[1])
        for variant in self.variants:
            if variant.name == method:
                return variant.description
        return self.description


FUSION = MethodFamily(
    "fusion",
    switch="fusion.modes",
    description="the fusion heads over the site experts' features, one per configured mode",
    variants=(
        MethodVariant(
            "fusion",
            "average_attention",
            "the product: the site experts combined by the trained fusion head",
        ),
        MethodVariant(
            "fusion_concat",
            "concat",
            "fusion head variant that concatenates the experts' features",
        ),
        MethodVariant(
            "fusion_attention",
            "attention",
            "fusion head variant that attends over the experts",
        ),
    ),
)
POOLED = MethodFamily(
    "pooled",
    switch="baselines.pooled",
    description="one model trained on the images of all sites pooled together",
)
FEDAVG = MethodFamily(
    "fedavg",
    switch="baselines.fedavg",
    description=(
        "one model trained by federated averaging over rounds (FedAvg), each site on its own images"
    ),
)
LOCAL = MethodFamily(
    "local",
    switch=None,
    description="the expert trained on site {site} alone",
    per_site=True,
)
OUTPUT_AVERAGE = MethodFamily(
    "output_average",
    switch="baselines.output_average",
    description="average of the local experts' predicted probabilities",
)
WEIGHT_AVERAGE = MethodFamily(
    "weight_average",
    switch="baselines.weight_average",
    description="one model whose weights are the average of the local experts' weights",
)
STACKING = MethodFamily(
    "stacking",
    switch="baselines.stacking",
    description="a classifier trained on the local experts' outputs",
)
RANDOM_FEATURES = MethodFamily(
    "random_features",
    switch="baselines.random_features",
    description=(
        "control: the fusion head on untrained (random) experts; fusion minus this is what the "
        "trained experts contribute"
    ),
)

METHOD_FAMILIES: tuple[MethodFamily, ...] = (
    FUSION,
    POOLED,
    FEDAVG,
    LOCAL,
    OUTPUT_AVERAGE,
    WEIGHT_AVERAGE,
    STACKING,
    RANDOM_FEATURES,
)
"""Every method family, in report order: the fusion heads, the models trained on every site
(pooled, FedAvg), the local experts, the ensembles of the local experts, the control."""


def method_family(name: str) -> MethodFamily:
    """The family declared as ``name``; :class:`UnknownChoiceError` names the declared ones."""
    for family in METHOD_FAMILIES:
        if family.name == name:
            return family
    raise UnknownChoiceError("method family", name, [f.name for f in METHOD_FAMILIES])


def family_of_method(method: str) -> MethodFamily | None:
    """The family that ``method`` (``fusion_concat``, ``local:<site>``, ...) belongs to, or None."""
    for family in METHOD_FAMILIES:
        if family.holds(method):
            return family
    return None


def report_order(experts: tuple[str, ...] | list[str]) -> list[str]:
    """Every method name in report order, a per-site family's once per expert site in
    ``experts``' order."""
    return [
        name
        for family in METHOD_FAMILIES
        for name in (
            [family.site_method(e) for e in experts] if family.per_site else family.method_names
        )
    ]
