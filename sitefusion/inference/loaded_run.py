"""Load a finished run directory and predict with every method it holds.

Each image is normalized once (its own site's normalizer, or the run's unseen-site policy), passed
once through every expert, and every method is computed from those shared outputs: the fusion
heads, stacking and output averaging from the cached-style features, the local experts from their
own heads. Only the pooled and weight-averaged networks need a forward pass of their own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from sitefusion.config import Config, config_from_dict
from sitefusion.errors import ArtifactError, SiteFusionError
from sitefusion.experts import SiteExpert
from sitefusion.normalization import NormalizerBank
from sitefusion.rundir import RunDir
from sitefusion.training.features import ExpertFeatures
from sitefusion.training.finetune import load_expert_states
from sitefusion.training.fusion_head import FusionClassifier
from sitefusion.training.run import FUSION_METHOD_NAMES, build_expert
from sitefusion.training.stacking import StackingModel

__all__ = ["LoadedRun", "RunPredictions", "softmax"]


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax."""
    z = logits - logits.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


@dataclass
class RunPredictions:
    """Every method's probabilities on N images, plus what was used to get them."""

    probs: dict[str, np.ndarray] = field(default_factory=dict)  # name -> [N, K]
    attention: dict[str, np.ndarray] = field(default_factory=dict)  # fusion name -> [N, E]
    norm_site: list[str] = field(default_factory=list)
    norm_policy: list[str] = field(default_factory=list)
    features: ExpertFeatures | None = None
    random_features: ExpertFeatures | None = None
    # Features of a fusion's own fine-tuned expert copies, where it has them (method -> cache).
    method_features: dict[str, ExpertFeatures] = field(default_factory=dict)


class LoadedRun:
    """A run directory, hash-checked and loaded for prediction.

    Attributes: ``cfg``, ``classes``, ``experts_sites`` (expert order), ``bank`` (normalizers),
    ``experts`` (trained :class:`SiteExpert` list), ``fusions`` (method name ->
    :class:`FusionClassifier`), optional ``pooled``, ``weight_average``, ``stacking`` and the
    untrained initial expert ``initial`` used by the random-feature control.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise ArtifactError(f"{self.root}: run directory does not exist")
        self.run = RunDir(self.root)
        info = self.run.read_manifest()
        if info.get("status") != "complete":
            raise ArtifactError(
                f"{self.root}: the run is not complete (status {info.get('status')!r}); "
                "finish it with `sitefusion train`"
            )
        self.run.verify_all()
        self.run_id: str = str(info.get("run_id", ""))
        raw = yaml.safe_load(self.run.read_text("config.yaml"))
        self.cfg: Config = config_from_dict(raw, str(self.root / "config.yaml"))
        self.schema: dict[str, Any] = self.run.read_json("schema.json")
        self.classes: tuple[str, ...] = tuple(self.schema["classes"])
        self.expert_sites: tuple[str, ...] = tuple(self.schema["experts"])
        self.bank = NormalizerBank.load(self.root / "normalizers")
        k = len(self.classes)
        self.experts = [self._network(f"experts/{s}.safetensors", k) for s in self.expert_sites]
        self.initial = self._network("experts/init.safetensors", k)
        self.pooled = (
            self._network("baselines/pooled.safetensors", k)
            if self.run.has("baselines/pooled.safetensors")
            else None
        )
        self.weight_average = (
            self._network("baselines/weight_average.safetensors", k)
            if self.run.has("baselines/weight_average.safetensors")
            else None
        )
        self.stacking = (
            StackingModel.from_json(self.run.read_json("baselines/stacking.json"))
            if self.run.has("baselines/stacking.json")
            else None
        )
        self.fusions: dict[str, FusionClassifier] = {}
        # The temperature each fusion's calibration entry stores (1: no scaling).
        self.temperatures: dict[str, float] = {}
        # Fusions trained end to end carry their own fine-tuned copies of the experts.
        self.fusion_experts: dict[str, list[SiteExpert]] = {}
        for name in [*FUSION_METHOD_NAMES.values(), "random_features"]:
            if self.run.has(f"fusion/{name}.safetensors"):
                self.fusions[name] = self.load_fusion(name)
                meta = self.run.read_json(f"fusion/{name}.json")
                self.temperatures[name] = self._temperature(name, meta)
            if self.run.has(f"fusion/{name}.experts.safetensors"):
                copies = [build_expert(self.cfg, k) for _ in self.expert_sites]
                load_expert_states(
                    self.run.read_tensors(f"fusion/{name}.experts.safetensors"),
                    copies,
                    self.expert_sites,
                )
                self.fusion_experts[name] = [c.eval() for c in copies]

    def _network(self, rel: str, num_classes: int) -> SiteExpert:
        net = build_expert(self.cfg, num_classes)
        try:
            net.load_state_dict(self.run.read_tensors(rel))
        except RuntimeError as err:
            raise ArtifactError(
                f"{self.root / rel}: weights do not fit the run's network ({err})"
            ) from err
        return net.eval()

    def _temperature(self, name: str, meta: dict[str, Any]) -> float:
        entry = meta.get("calibration") or {}
        t = entry.get("temperature", 1.0)
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t < float("inf"):
            raise ArtifactError(
                f"{self.root / 'fusion' / (name + '.json')}: field 'calibration.temperature' "
                f"must be a positive number, got {t!r}"
            )
        return float(t)

    def load_fusion(self, name: str) -> FusionClassifier:
        """The fusion head stored as ``fusion/<name>``."""
        meta = self.run.read_json(f"fusion/{name}.json")["config"]
        model = FusionClassifier(
            meta["mode"],
            meta["num_experts"],
            meta["feature_dim"],
            meta["num_classes"],
            use_local_logits=meta["use_local_logits"],
            hidden=meta["hidden"],
            dropout=meta["dropout"],
        )
        model.load_state_dict(self.run.read_tensors(f"fusion/{name}.safetensors"))
        return model.eval()

    @property
    def spatial_size(self) -> tuple[int, ...]:
        return tuple(self.cfg.data.spatial_size)

    @property
    def channels(self) -> int:
        return self.cfg.data.channels

    @property
    def method_names(self) -> list[str]:
        """Names of every method this run can predict with."""
        names = [n for n in FUSION_METHOD_NAMES.values() if n in self.fusions]
        if self.pooled is not None:
            names.append("pooled")
        names += [f"local:{s}" for s in self.expert_sites]
        names.append("output_average")
        if self.weight_average is not None:
            names.append("weight_average")
        if self.stacking is not None:
            names.append("stacking")
        if "random_features" in self.fusions:
            names.append("random_features")
        return names

    @torch.inference_mode()
    def predict(
        self,
        images: np.ndarray,
        sites: Sequence[str | None],
        *,
        batch_size: int = 64,
        bank: NormalizerBank | None = None,
        on_batch: Callable[[int], None] | None = None,
    ) -> RunPredictions:
        """Predict every method on conformed images ``[N, C, *S]`` of the given sites.

        ``sites[i]`` may be ``None`` or a site the run does not know: the bank's unseen-site policy
        then picks the normalizer. ``bank`` overrides the run's bank (leave-one-site-out).
        """
        if len(images) != len(sites):
            raise SiteFusionError(f"{len(images)} images but {len(sites)} site entries")
        bank = bank or self.bank
        n, k, e = len(images), len(self.classes), len(self.experts)
        d = self.experts[0].feature_dim
        feats = np.zeros((n, e, d), np.float32)
        logits = np.zeros((n, e, k), np.float32)
        rfeats = np.zeros((n, e, d), np.float32)
        rlogits = np.zeros((n, e, k), np.float32)
        pooled_logits = np.zeros((n, k), np.float32)
        wa_logits = np.zeros((n, k), np.float32)
        tuned = {
            name: (np.zeros((n, e, d), np.float32), np.zeros((n, e, k), np.float32))
            for name in self.fusion_experts
            if name in self.fusions
        }
        out = RunPredictions()
        for start in range(0, n, batch_size):
            stop = min(n, start + batch_size)
            normed = [bank.transform(images[i], sites[i]) for i in range(start, stop)]
            out.norm_site += [ni.site_used for ni in normed]
            out.norm_policy += [ni.policy for ni in normed]
            xb = torch.from_numpy(np.stack([ni.array for ni in normed]).astype(np.float32))
            for j, expert in enumerate(self.experts):
                z = expert.embed(xb)
                feats[start:stop, j] = z.numpy()
                logits[start:stop, j] = expert.head(z).numpy()
            for name, (tf, tl) in tuned.items():
                for j, expert in enumerate(self.fusion_experts[name]):
                    z = expert.embed(xb)
                    tf[start:stop, j] = z.numpy()
                    tl[start:stop, j] = expert.head(z).numpy()
            if "random_features" in self.fusions and "random_features" not in tuned:
                # Every expert starts from the same weights, so the untrained features are the
                # same for each expert: compute them once.
                z0 = self.initial.embed(xb)
                rfeats[start:stop] = z0.numpy()[:, None, :]
                rlogits[start:stop] = self.initial.head(z0).numpy()[:, None, :]
            if self.weight_average is not None:
                wa_logits[start:stop] = self.weight_average(xb).numpy()
            if self.pooled is not None:
                xp = np.stack([bank.pooled_.transform(images[i]) for i in range(start, stop)])
                pooled_logits[start:stop] = self.pooled(
                    torch.from_numpy(xp.astype(np.float32))
                ).numpy()
            if on_batch is not None:
                on_batch(stop - start)
        ids = tuple(str(i) for i in range(n))
        out.features = ExpertFeatures(ids, feats, logits)
        out.random_features = ExpertFeatures(ids, rfeats, rlogits)
        out.method_features = {
            name: ExpertFeatures(ids, tf, tl) for name, (tf, tl) in tuned.items()
        }
        self.predict_heads(
            out,
            out.features,
            out.random_features,
            method_features=out.method_features,
        )
        local = softmax(logits)
        for j, s in enumerate(self.expert_sites):
            out.probs[f"local:{s}"] = local[:, j]
        if self.pooled is not None:
            out.probs["pooled"] = softmax(pooled_logits)
        if self.weight_average is not None:
            out.probs["weight_average"] = softmax(wa_logits)
        return out

    @torch.inference_mode()
    def predict_heads(
        self,
        out: RunPredictions,
        feats: ExpertFeatures,
        random_feats: ExpertFeatures | None,
        mask: np.ndarray | None = None,
        fusions: dict[str, FusionClassifier] | None = None,
        method_features: dict[str, ExpertFeatures] | None = None,
        calibrated: bool = False,
    ) -> None:
        """Fill ``out`` with the feature-based methods (fusions, stacking, output averaging).

        ``mask [N, E]``: experts present (default all);
        ``method_features``: features of a fusion's own fine-tuned experts, used by that fusion
        instead of ``feats`` (or ``random_feats`` for the control). ``calibrated``: divide each
        stored fusion's logits by its run temperature (``temperatures``) before the softmax,
        as scoring reports them; evaluation leaves it off and measures the scaling separately.
        """
        method_features = method_features or {}
        fusions = self.fusions if fusions is None else fusions
        f = torch.from_numpy(feats.features)
        lg = torch.from_numpy(feats.logits)
        m = torch.from_numpy(mask) if mask is not None else None
        for name, head in fusions.items():
            if name in method_features:
                own = method_features[name]
                res = head(torch.from_numpy(own.features), torch.from_numpy(own.logits), m)
            elif name == "random_features":
                if random_feats is None:
                    continue
                res = head(
                    torch.from_numpy(random_feats.features),
                    torch.from_numpy(random_feats.logits),
                    m,
                )
            else:
                res = head(f, lg, m)
            logits = res.logits.numpy()
            if calibrated and head is self.fusions.get(name):
                logits = logits / self.temperatures.get(name, 1.0)
            out.probs[name] = softmax(logits)
            out.attention[name] = res.weights.numpy()
        local = softmax(feats.logits)
        if mask is not None:
            w = mask.astype(np.float64)[:, :, None]
            out.probs["output_average"] = (local * w).sum(1) / w.sum(1)
        else:
            out.probs["output_average"] = local.mean(1)
        if self.stacking is not None and mask is None:
            out.probs["stacking"] = self.stacking.predict_proba(feats.features, feats.logits)
