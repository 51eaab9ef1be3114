"""What every config section shares: a frozen, strict, closed pydantic model, the converters that
let YAML lists and mappings in, and the validated copy (:func:`replace`).

Strict means what a config file says is what the run gets: ``"3"`` is not an integer, ``1`` is
not ``true``, ``3.0`` is not an epoch count; an integer is accepted where a number is expected
(and stored as a float). NaN and infinities are refused, and so are keys the section does not
have. A section is frozen: assigning to a field raises :class:`AttributeError`, as the frozen
dataclasses this schema replaced did.

Built directly (``TrainingConfig(epochs=0)``), a section raises pydantic's ``ValidationError``;
:func:`validate`, :func:`replace` and the loaders raise :class:`~sitefusion.errors.ConfigError`
with the file, the dotted field, the value and what was expected.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import FrozenInstanceError
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError

from sitefusion.config.messages import config_error

__all__ = ["AS_DICT", "AS_TUPLE", "ConfigModel", "replace", "validate"]

ModelT = TypeVar("ModelT", bound="ConfigModel")


def _as_tuple(value: Any) -> Any:
    """A YAML list becomes the tuple the field holds (anything else is left to the type check)."""
    return tuple(value) if isinstance(value, list) else value


def _as_dict(value: Any) -> Any:
    """Any mapping becomes a plain dict with string keys (YAML may give ``1:`` as a key)."""
    return {str(k): v for k, v in value.items()} if isinstance(value, Mapping) else value


#: ``Annotated[tuple[X, ...], AS_TUPLE]``: a field that holds a tuple and is written as a list.
AS_TUPLE = BeforeValidator(_as_tuple)
#: ``Annotated[Mapping[str, X], AS_DICT]``: a mapping field, keys as strings.
AS_DICT = BeforeValidator(_as_dict)


class ConfigModel(BaseModel):
    """A config section: frozen, strict, unknown keys refused.

    ``section`` is the section's dotted place in a :class:`~sitefusion.config.Config`
    (``"fusion"``), so that a section validated on its own still names its fields in full.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)

    section: ClassVar[str] = ""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in type(self).__private_attributes__:
            super().__setattr__(name, value)
            return
        raise FrozenInstanceError(
            f"cannot assign to field {name!r}: a config is frozen; make a changed copy with "
            "sitefusion.config.replace"
        )

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}: a config is frozen")


def validate(cls: type[ModelT], data: Any, source: str) -> ModelT:
    """``cls`` validated from plain ``data`` (as read from YAML or JSON).

    Raises:
        ConfigError: naming ``source``, the dotted field, the value and what was expected.
    """
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise config_error(err, cls, source) from err


def replace(model: ModelT, /, **changes: Any) -> ModelT:
    """A copy of ``model`` with ``changes``, validated as a new model is (the role
    ``dataclasses.replace`` had): field constraints and cross-field rules hold for the copy too.

    Pydantic's ``model_copy(update=...)`` skips validation; use this instead. Private state (a
    :class:`~sitefusion.config.Config`'s ``source_path``) is kept.

    Raises:
        ConfigError: an unknown field, or a change the schema refuses.
    """
    cls = type(model)
    data: dict[str, Any] = {name: getattr(model, name) for name in cls.model_fields}
    data.update(changes)
    new = validate(cls, data, str(getattr(model, "source_path", None) or "<config>"))
    for name in cls.__private_attributes__:
        setattr(new, name, getattr(model, name))
    return new
