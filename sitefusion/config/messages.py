"""Config errors as sitefusion words them: pydantic's ``ValidationError`` -> :class:`ConfigError`.

Every message names the source (the config file, an override, a run's stored config), the
dotted field, the value and what was expected, with the valid choices and a "did you mean" for
names, on one line. The schema's own validators raise the errors made here
(:func:`field_error`, :func:`choice_error`, :func:`sentence_error`); pydantic's built-in errors
(wrong types, bounds, choices, unknown keys) are worded from the schema itself: a field's
``expected`` text (:func:`expects`), its ``Literal`` choices, the fields of its section.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails, PydanticCustomError

from sitefusion.errors import ConfigError, did_you_mean

__all__ = [
    "choice_error",
    "config_error",
    "expects",
    "field_error",
    "field_message",
    "sentence_error",
    "unknown_error",
]

#: What a value of the wrong type should have been, by pydantic error type.
_EXPECTED_TYPE = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "finite_number": "a finite number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "tuple_type": "a list",
    "list_type": "a list",
    "dict_type": "a mapping",
    "mapping_type": "a mapping",
}


def expects(text: str, *, upper: bool = False) -> dict[str, Any]:
    """``json_schema_extra`` of a bounded field: what it expects, in words.

    ``text`` answers a value under the lower bound (``"a positive integer"``); a value over the
    upper bound is answered ``"at most N"`` unless ``upper`` (then ``text`` too, for ranges
    such as ``"a fraction between 0 and 1"``). The text also lands in the JSON schema.
    """
    return {"expected": text, "expected_upper": True} if upper else {"expected": text}


def field_error(field: str, value: Any, expected: str) -> PydanticCustomError:
    """A validator's error about ``field`` (dotted, relative to the model being validated)."""
    return PydanticCustomError(
        "sitefusion_field",
        "field {field} is {value}; expected {expected}",
        {"field": field, "value": value, "expected": expected},
    )


def choice_error(
    field: str, value: Any, choices: Iterable[str], what: str = "valid choices"
) -> PydanticCustomError:
    """A validator's error: ``field`` is not one of ``choices`` (listed, with a "did you mean")."""
    return PydanticCustomError(
        "sitefusion_choice",
        "field {field} is {value}; {what}: {choices}",
        {"field": field, "value": value, "choices": list(choices), "what": what},
    )


def unknown_error(field: str, choices: Iterable[str], what: str) -> PydanticCustomError:
    """A validator's error: ``field`` (a key the caller wrote) is not one of ``choices``."""
    return PydanticCustomError(
        "sitefusion_unknown",
        "unknown field {field}",
        {"field": field, "choices": list(choices), "what": what},
    )


def field_message(field: str, text: str) -> PydanticCustomError:
    """A validator's error about ``field`` in a lower layer's own words (they name the value)."""
    return PydanticCustomError(
        "sitefusion_message", "field {field}: {text}", {"field": field, "text": text}
    )


def sentence_error(text: str) -> PydanticCustomError:
    """A validator's error that is a whole sentence already naming its fields (cross-field rules)."""
    return PydanticCustomError("sitefusion_sentence", "{text}", {"text": text})


def config_error(err: ValidationError, model: type[BaseModel], source: str) -> ConfigError:
    """One :class:`ConfigError` for ``err``, raised validating ``model`` from ``source``.

    The first problem is described in full; any others are named after it, so that one run of
    ``sitefusion config`` shows every field to fix.
    """
    problems = err.errors(include_url=False)
    prefix = str(getattr(model, "section", ""))
    text = _describe(problems[0], model, prefix, source)
    others = [_where(prefix, p) for p in problems[1:]]
    if others:
        text += f" (and {len(others)} more: {', '.join(others)})"
    return ConfigError(text)


#: Our own error types whose context names a field relative to where the error was raised.
_NAMES_FIELD = ("sitefusion_field", "sitefusion_choice", "sitefusion_unknown", "sitefusion_message")


def _join(prefix: str, loc: Iterable[Any]) -> str:
    where = prefix
    for part in loc:
        if isinstance(part, int):
            where += f"[{part}]"
        elif part != "":  # a field validator's error is about its own field
            where = f"{where}.{part}" if where else str(part)
    return where


def _where(prefix: str, problem: ErrorDetails) -> str:
    where = _join(prefix, problem["loc"])
    ctx = problem.get("ctx") or {}
    if problem["type"] in _NAMES_FIELD:
        where = _join(where, [ctx["field"]])
    return f"'{where}'" if where else "the config"


def _without_none(tp: Any) -> tuple[Any, bool]:
    """``X | None`` -> ``(X, True)``; any other annotation -> ``(tp, False)``."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _at(model: type[BaseModel], loc: tuple[Any, ...]) -> tuple[FieldInfo | None, Any, bool]:
    """The field holding ``loc``, the annotation found there (tuple items and mapping values
    followed) and whether that annotation accepts null; ``(None, None, False)`` if unknown."""
    info: FieldInfo | None = None
    tp: Any = model
    nullable = False
    for part in loc:
        tp, _ = _without_none(tp)
        origin = typing.get_origin(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel) and isinstance(part, str):
            info = tp.model_fields.get(part)
            if info is None:
                return None, None, False
            tp, nullable = _without_none(info.annotation)
        elif origin is tuple:
            args = typing.get_args(tp)
            tp = args[0] if len(args) == 2 and args[1] is Ellipsis else args[part]
            nullable = False
        elif origin in (Mapping, dict) or tp is dict:
            tp = typing.get_args(tp)[1] if typing.get_args(tp) else Any
            nullable = False
        else:
            return None, None, False
    return info, tp, nullable


def _bound(problem: ErrorDetails, info: FieldInfo | None) -> str:
    """What a value outside a field's bounds should have been."""
    ctx = problem.get("ctx") or {}
    extra = info.json_schema_extra if info is not None else None
    words = extra if isinstance(extra, dict) else {}
    upper = problem["type"] in ("less_than", "less_than_equal")
    if isinstance(words.get("expected"), str) and (not upper or words.get("expected_upper")):
        return str(words["expected"])
    for key, text in (
        ("ge", "at least"),
        ("gt", "more than"),
        ("le", "at most"),
        ("lt", "less than"),
    ):
        if key in ctx:
            bound = ctx[key]
            return f"{text} {bound:,}" if isinstance(bound, int) else f"{text} {bound}"
    return str(problem["msg"])  # pragma: no cover - every bound error has one of the four


def _describe(problem: ErrorDetails, model: type[BaseModel], prefix: str, source: str) -> str:
    kind = problem["type"]
    loc = tuple(problem["loc"])
    value = problem["input"]
    ctx = problem.get("ctx") or {}
    where = _join(prefix, loc)
    if kind == "sitefusion_sentence":
        return f"{source}: {ctx['text']}"
    if kind in _NAMES_FIELD:
        where = _join(where, [ctx["field"]])
    if kind == "sitefusion_message":
        return f"{source}: field '{where}': {ctx['text']}"
    if kind == "sitefusion_unknown":
        choices = [str(c) for c in ctx["choices"]]
        name = where.rsplit(".", 1)[-1]
        return (
            f"{source}: unknown field '{where}'; {ctx['what']}: {', '.join(choices)}"
            f"{did_you_mean(name, choices)}"
        )
    if kind == "sitefusion_field":
        return f"{source}: field '{where}' is {ctx['value']!r}; expected {ctx['expected']}"
    if kind == "sitefusion_choice":
        choices = [str(c) for c in ctx["choices"]]
        return (
            f"{source}: field '{where}' is {ctx['value']!r}; {ctx['what']}: {', '.join(choices)}"
            f"{did_you_mean(str(ctx['value']), choices)}"
        )
    if kind == "extra_forbidden":
        _, parent, _ = _at(model, loc[:-1])
        is_model = isinstance(parent, type) and issubclass(parent, BaseModel)
        names = list(parent.model_fields) if is_model else []
        return (
            f"{source}: unknown field '{where}'; valid fields here: {', '.join(names)}"
            f"{did_you_mean(str(loc[-1]), names)}"
        )
    info, tp, nullable = _at(model, loc)
    if kind == "literal_error" and typing.get_origin(tp) is Literal:
        choices = [str(a) for a in typing.get_args(tp)]
        return (
            f"{source}: field '{where}' is {value!r}; valid choices: {', '.join(choices)}"
            f"{did_you_mean(str(value), choices)}"
        )
    if kind == "value_error":  # a lower layer's own check, raised as a ValueError
        return f"{source}: field '{where}': {ctx.get('error', problem['msg'])}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        expected = _bound(problem, info)
    elif kind in ("model_type", "model_attributes_type"):
        expected = f"a mapping of {ctx.get('class_name', 'section')} fields"
    else:
        expected = _EXPECTED_TYPE.get(kind, str(problem["msg"]))
        if nullable and kind in _EXPECTED_TYPE:
            expected += " or null"
    return f"{source}: field '{where}' is {value!r}; expected {expected}"
