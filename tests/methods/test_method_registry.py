"""The method registry is one declaration per method family: every ``Method`` class is bound to a
declared family and every declared family to a class, each declared switch decides what a run
trains, and the names evaluation and reporting know are the declared ones."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import sitefusion.methods
from sitefusion.config import Config, replace
from sitefusion.errors import UnknownChoiceError
from sitefusion.evaluation.method_families import (
    FUSION,
    LOCAL,
    METHOD_FAMILIES,
    MethodFamily,
    family_of_method,
    method_family,
    report_order,
)
from sitefusion.evaluation.predictions import BASE_METHODS, FUSION_METHODS, canonical_method_order
from sitefusion.evaluation.synthetic import DEFAULT_SKILL
from sitefusion.methods import FUSION_METHOD_NAMES, METHOD_CLASSES, Method, configured_methods
from sitefusion.methods.registry import switched_on
from sitefusion.reporting.formatting import METHOD_DESCRIPTIONS, describe_method

SITES = ("site_a", "site_b", "site_c")
BOOLEAN_SWITCHES = [f for f in METHOD_FAMILIES if f.switch and f.switch.startswith("baselines.")]


def _baseline(family: MethodFamily) -> str:
    """``pooled`` for the switch ``baselines.pooled``."""
    assert family.switch is not None
    return family.switch.split(".", 1)[1]


def _concrete_method_classes() -> set[type[Method]]:
    for info in pkgutil.iter_modules(sitefusion.methods.__path__):
        importlib.import_module(f"sitefusion.methods.{info.name}")
    found: set[type[Method]] = set()
    todo = list(Method.__subclasses__())
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        if cls.__module__.startswith("sitefusion.") and not inspect.isabstract(cls):
            found.add(cls)
    return found


def _with(cfg: Config, **baselines: bool) -> Config:
    return replace(cfg, baselines=replace(cfg.baselines, **baselines))


def _everything_on() -> Config:
    return _with(Config(), **{_baseline(f): True for f in BOOLEAN_SWITCHES})


def test_every_method_class_has_a_declaration_and_every_declaration_a_class() -> None:
    declared = [f.name for f in METHOD_FAMILIES]
    assert len(set(declared)) == len(declared), "a family is declared twice"
    assert sorted(METHOD_CLASSES) == sorted(declared)
    classes = _concrete_method_classes()
    unbound = sorted(c.__name__ for c in classes - set(METHOD_CLASSES.values()))
    assert not unbound, f"Method classes without a declared family: {unbound}"
    assert len(set(METHOD_CLASSES.values())) == len(METHOD_CLASSES)


def test_every_declared_switch_is_a_config_field() -> None:
    cfg = Config()
    for family in METHOD_FAMILIES:
        if family.switch is None:
            continue
        value: object = cfg
        for part in family.switch.split("."):
            assert hasattr(value, part), f"{family.name}: no config field {family.switch}"
            value = getattr(value, part)
        if family.variants:
            assert isinstance(value, tuple | list), f"{family.switch} is {value!r}, not a list"
            assert {v.value for v in family.variants} == set(value), family.switch
        else:
            assert isinstance(value, bool), f"{family.switch} is {value!r}, not a switch"


def test_each_configured_method_is_a_name_of_the_family_whose_class_built_it() -> None:
    methods = configured_methods(_everything_on(), SITES)
    family_of_class = {cls: name for name, cls in METHOD_CLASSES.items()}
    for method in methods:
        family = family_of_method(method.name)
        assert family is not None, f"{method.name} is not declared"
        assert family.name == family_of_class[type(method)], method.name
    names = [m.name for m in methods]
    assert sorted(names) == sorted(report_order(SITES)), "every declared name is trained"


@pytest.mark.parametrize("family", BOOLEAN_SWITCHES, ids=lambda f: f.name)
def test_turning_a_switch_off_drops_exactly_its_family(family: MethodFamily) -> None:
    on = _everything_on()
    off = _with(on, **{_baseline(family): False})
    assert switched_on(on, family) and not switched_on(off, family)
    trained = [m.name for m in configured_methods(on, SITES)]
    kept = [m.name for m in configured_methods(off, SITES)]
    assert [n for n in trained if n not in kept] == list(family.method_names)
    assert [n for n in trained if n in kept] == kept, "the other methods keep their order"


def test_the_fusion_modes_switch_trains_one_head_per_listed_mode() -> None:
    cfg = Config()
    cfg = replace(cfg, fusion=replace(cfg.fusion, modes=("concat",)))
    names = [m.name for m in configured_methods(cfg, SITES)]
    assert [n for n in names if n in FUSION_METHODS] == ["fusion_concat"]
    assert {v.value: v.name for v in FUSION.variants} == FUSION_METHOD_NAMES


def test_evaluation_and_reporting_read_their_names_from_the_declarations() -> None:
    declared = [n for f in METHOD_FAMILIES for n in f.method_names]
    assert list(BASE_METHODS) == declared
    assert FUSION.method_names == FUSION_METHODS
    assert list(METHOD_DESCRIPTIONS) == declared
    assert all(METHOD_DESCRIPTIONS.values())
    assert describe_method(LOCAL.site_method("north")) == "the expert trained on site north alone"
    assert set(DEFAULT_SKILL) <= set(declared), "simulated skills of undeclared methods"
    shuffled = list(reversed(report_order(SITES)))
    assert canonical_method_order(shuffled, SITES) == report_order(SITES)


def test_an_undeclared_family_is_refused_with_the_declared_ones() -> None:
    with pytest.raises(UnknownChoiceError, match="did you mean 'pooled'"):
        method_family("poled")
