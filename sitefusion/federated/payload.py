"""What one federated message carries, and the record of every message sent.

A :class:`Payload` is JSON metadata, named tensors (weights, aggregates, predictions) and named
files (a run directory's JSON and safetensors files). The Flower app encodes it as one
``RecordDict``; the in-process transport passes it as it is. Every payload that crosses a
transport is described in the coordinator's ``federation/messages.jsonl`` (phase, site,
direction, the JSON keys, each tensor's name, shape and dtype, each file's name and size, and the
bytes in all), so that what travelled can be audited after the run — and is, by the tests.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = ["Payload", "describe_payload"]


@dataclass
class Payload:
    """One message's content.

    ``meta``: JSON data (the phase, settings, counts, summaries); ``tensors``: name -> tensor;
    ``files``: run-directory relative path -> bytes.
    """

    meta: dict[str, Any] = field(default_factory=dict)
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        """Bytes of content: JSON text, tensor data and file contents."""
        return (
            len(json.dumps(self.meta).encode())
            + sum(t.numel() * t.element_size() for t in self.tensors.values())
            + sum(len(b) for b in self.files.values())
        )

    def prefixed(self, prefix: str) -> dict[str, torch.Tensor]:
        """The tensors named ``<prefix>.<key>``, keyed by ``key``."""
        n = len(prefix) + 1
        return {k[n:]: v for k, v in self.tensors.items() if k.startswith(f"{prefix}.")}

    def arrays(self) -> dict[str, np.ndarray]:
        """The tensors as NumPy arrays."""
        return {k: v.detach().cpu().numpy() for k, v in self.tensors.items()}


def describe_payload(payload: Payload) -> dict[str, Any]:
    """A JSON description of ``payload`` without its values (for ``messages.jsonl``)."""
    return {
        "meta_keys": sorted(payload.meta),
        "tensors": {
            k: {"shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")}
            for k, v in sorted(payload.tensors.items())
        },
        "files": {k: len(v) for k, v in sorted(payload.files.items())},
        "bytes": payload.nbytes,
    }
