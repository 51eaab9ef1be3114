"""Typed federated messages: one pydantic model per phase's request and reply.

A message's fields are of three kinds, told apart by their annotation:

- ``torch.Tensor`` or ``dict[str, torch.Tensor]`` fields travel as the payload's tensors (a
  mapping field ``weights`` as ``weights.<key>``);
- a ``dict[str, bytes]`` field travels as the payload's files (a run directory's files);
- everything else is JSON metadata (numbers, strings, lists, mappings).

:meth:`Message.to_payload` and :meth:`Message.from_payload` convert both ways, and decoding
validates on both ends: a missing or unknown field, a value of the wrong type or a tensor where
none is declared is a :class:`~sitefusion.errors.FederationError` that names the phase, the
sender and the field. Tensor *contents* (names, shapes, dtypes, finite values of a site's update)
are checked where they are averaged (:mod:`sitefusion.federated.updates`).
"""

from __future__ import annotations

import types
import typing
from typing import Any, TypeVar

import torch
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

from sitefusion.errors import FederationError
from sitefusion.federated.payload import Payload

__all__ = ["ErrorReply", "Message", "Reply", "Request", "RoundReply"]

M = TypeVar("M", bound="Message")

_RUN_ID = r"^[0-9a-f]{6,64}$"


def _kind(annotation: Any) -> str:
    """``tensor``, ``tensors``, ``files`` or ``meta`` for a field's annotation."""
    if annotation is torch.Tensor:
        return "tensor"
    if typing.get_origin(annotation) is dict:
        value = typing.get_args(annotation)[1]
        if value is torch.Tensor:
            return "tensors"
        if value is bytes:
            return "files"
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and torch.Tensor in (
        typing.get_args(annotation)
    ):
        raise TypeError("optional tensor fields are not supported: give the field a default")
    return "meta"


class Message(BaseModel):
    """A message between the coordinator and a site (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    @classmethod
    def _field_kinds(cls) -> dict[str, str]:
        return {name: _kind(field.annotation) for name, field in cls.model_fields.items()}

    def to_payload(self) -> Payload:
        """The message as a :class:`~sitefusion.federated.payload.Payload`."""
        payload = Payload()
        for name, kind in self._field_kinds().items():
            value = getattr(self, name)
            if kind == "tensor":
                payload.tensors[name] = value
            elif kind == "tensors":
                payload.tensors.update({f"{name}.{k}": v for k, v in value.items()})
            elif kind == "files":
                payload.files.update(value)
            else:
                payload.meta[name] = value
        return payload

    @classmethod
    def from_payload(cls: type[M], payload: Payload, where: str) -> M:
        """Decode and validate ``payload``; ``where`` names it in errors (phase and sender).

        Raises:
            FederationError: a field is missing, unknown or of the wrong type, or a tensor or
                file arrived that the message does not declare.
        """
        kinds = cls._field_kinds()
        data: dict[str, Any] = dict(payload.meta)
        grouped: dict[str, dict[str, torch.Tensor]] = {
            n: {} for n, k in kinds.items() if k == "tensors"
        }
        for key, tensor in payload.tensors.items():
            prefix, _, rest = key.partition(".")
            if kinds.get(key) == "tensor":
                data[key] = tensor
            elif rest and kinds.get(prefix) == "tensors":
                grouped[prefix][rest] = tensor
            else:
                raise FederationError(f"{where}: tensor {key!r} is not part of {cls.__name__}")
        for name, tensors in grouped.items():
            if tensors or name not in data:
                data[name] = tensors
        files = [n for n, k in kinds.items() if k == "files"]
        if payload.files:
            if not files:
                raise FederationError(f"{where}: {cls.__name__} carries no files")
            data[files[0]] = dict(payload.files)
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            problems = "; ".join(
                f"field '{'.'.join(str(p) for p in e['loc']) or '?'}': {e['msg']}"
                for e in err.errors()
            )
            raise FederationError(f"{where}: {cls.__name__} is malformed: {problems}") from err


class Request(Message):
    """What every coordinator message carries: the phase, the run, the configuration (without
    local paths; the site adds its own) and the federation's sites in order."""

    phase: str
    run_id: str = Field(pattern=_RUN_ID)
    config: dict[str, Any]
    sites: list[str]


class Reply(Message):
    """What every site reply carries: the site's name (checked against the node that sent it)."""

    site: str
    phase: str = ""


class ErrorReply(Reply):
    """A site's own error (its data, its work folder, a message it refused), in one line."""

    error: str


class RoundReply(Reply):
    """A site's update in one round of federated averaging: its new weights, how many examples
    it trained on and the mean loss of its last local epoch."""

    examples: StrictInt
    loss: float
    weights: dict[str, torch.Tensor]
