"""The ``ood_threshold`` phase: the scorer's out-of-distribution reference of a federated run.

The mean and covariance of the experts' mean feature over every fusion-split image come from the
sites' aggregates (sent with ``head_setup``); each site then returns a histogram of its
fusion-split images' Mahalanobis distances to that reference (counts per bin, never one image's
distance), and the coordinator sets the threshold from the merged histogram.
"""

from __future__ import annotations

import numpy as np
import torch

from sitefusion.federated.coordinator import Coordinator
from sitefusion.federated.messages import Reply, Request
from sitefusion.federated.phase import OncePhase
from sitefusion.scoring.ood import OOD_REFERENCE, MahalanobisOOD
from sitefusion.workflows.federation.site import SiteSession

__all__ = ["OodThreshold"]


class OodRequest(Request):
    """The experts' feature cache to use, the reference and the histogram's bin edges."""

    experts: str
    reference: dict[str, torch.Tensor]
    edges: torch.Tensor


class OodReply(Reply):
    """Counts of the site's fusion-split images per bin of distance."""

    counts: torch.Tensor


class OodThreshold(OncePhase[OodRequest, OodReply]):
    """The OOD reference from aggregates (see the module docstring)."""

    name = "ood_threshold"
    kind = "query"
    request_type = OodRequest
    reply_type = OodReply

    def done(self, co: Coordinator) -> bool:
        return co.run.has(OOD_REFERENCE)

    def _reference(self, co: Coordinator) -> MahalanobisOOD:
        if "ood" not in co.memory:
            moments = co.run.read_tensors("federation/ood_moments.safetensors")
            co.memory["ood"] = MahalanobisOOD(co.cfg.scoring.ood_quantile).fit_moments(
                float(moments["count"].item()), moments["sum"].numpy(), moments["outer"].numpy()
            )
        ood: MahalanobisOOD = co.memory["ood"]
        return ood

    def request(self, co: Coordinator, site: str) -> OodRequest:
        ood = self._reference(co)
        edges = np.linspace(0.0, 50.0 * np.sqrt(len(ood.mean_)), 8193)
        reference = {
            k: torch.from_numpy(np.asarray(v, np.float64))
            for k, v in {
                "mean": ood.mean_,
                "scale": ood.scale_,
                "precision": ood.precision_,
                "threshold": np.array([0.0]),
                "count": np.array([0.0]),
            }.items()
        }
        return OodRequest(
            **co.fields(
                self,
                experts=co.run.read_json("federation/head_setup.json")["experts"],
                reference=reference,
                edges=torch.from_numpy(edges),
            )
        )

    def handle(self, site: SiteSession, request: OodRequest) -> OodReply:
        feats, _ = site.head_cache(request.experts)
        fusion = site.fusion_split(feats)
        state = {k: v.numpy() for k, v in request.reference.items()}
        ood = MahalanobisOOD.from_state(state, 0.99)
        edges = request.edges.numpy()
        scores = np.clip(ood.score(feats.features[fusion]), edges[0], edges[-1])
        counts, _ = np.histogram(scores, bins=edges)
        return OodReply(
            site=site.name, phase=self.name, counts=torch.from_numpy(counts.astype(np.float64))
        )

    def combine(self, co: Coordinator, replies: dict[str, OodReply]) -> None:
        ood = self._reference(co)
        edges = np.linspace(0.0, 50.0 * np.sqrt(len(ood.mean_)), 8193)
        counts = torch.stack([replies[s].counts for s in co.sites]).sum(0).numpy()
        ood.set_threshold(edges, counts)
        co.run.write_tensors(
            OOD_REFERENCE, {k: torch.from_numpy(np.asarray(v)) for k, v in ood.state().items()}
        )
        co.say(
            f"OOD reference: {int(counts.sum())} fusion-split images, threshold {ood.threshold_:.2f}"
        )
