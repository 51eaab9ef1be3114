"""The fusion: a head over every site expert's features, optionally trained end to end.

One class serves the three modes (``average_attention`` is the product ``fusion``; ``concat`` and
``attention`` are ``fusion_concat`` and ``fusion_attention``). The heads learn from the rows that
:func:`sitefusion.training.context.select_head_rows` chooses, with their presence masks, so no
expert's feature of an image it trained on reaches the fusion.

The product fusion (the first configured mode), when ``fusion.finetune_epochs > 0``, then gets its
own copies of the experts, fine-tuned together with the head on the same rows and masks
(``fusion/<name>.experts.safetensors``), with ``fusion.calibration_fraction`` of the fusion
split's groups held out to fit its temperature. Without fine-tuning its temperature is fitted on
out-of-fold logits of its own training rows.

Artifacts: ``fusion/<name>.safetensors`` (the head), ``fusion/<name>.json`` (its configuration,
loss curve, calibration), and the expert copies where fine-tuned.

Why this module is a little long: the product fusion's end-to-end fine-tuning, soup check and
temperature belong to the method that owns them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import GroupKFold

from sitefusion.config import Config
from sitefusion.errors import ArtifactError
from sitefusion.evaluation.calibration import temperature_record
from sitefusion.evaluation.method_families import FUSION
from sitefusion.experts import SiteExpert, build_expert
from sitefusion.fusion import FusedSystem, FusionClassifier, expert_states, load_expert_states
from sitefusion.methods.base import (
    ImageBatch,
    LoadContext,
    Method,
    MethodOutput,
    OwnOutputs,
    network_input,
    softmax_rows,
)
from sitefusion.rundir import RunDir
from sitefusion.training.context import (
    HeadRows,
    TrainContext,
    calibration_holdout,
    normalize_rows,
)
from sitefusion.training.features import ExpertFeatures
from sitefusion.training.finetune import compare_soup_to_members, finetune_soup
from sitefusion.training.fusion_head import fit_fusion
from sitefusion.training.progress import make_progress

__all__ = ["FUSION_METHOD_NAMES", "FusionMethod", "fit_head"]

#: Method name of each fusion mode (declared in :mod:`sitefusion.evaluation.method_families`).
FUSION_METHOD_NAMES = {variant.value: variant.name for variant in FUSION.variants}


def fit_head(
    cfg: Config,
    mode: str,
    features: np.ndarray,
    logits: np.ndarray,
    labels: np.ndarray,
    presence: np.ndarray,
    num_classes: int,
    seed: int,
) -> FusionClassifier:
    """A frozen-feature head of ``mode`` on ``features [M, E, D]``, ``logits [M, E, K]`` with the
    run's configuration ``cfg``; the out-of-fold temperature and leave-one-site-out use it."""
    head, _ = fit_fusion(
        mode,
        features,
        logits,
        labels,
        cfg=cfg.fusion,
        num_classes=num_classes,
        seed=seed,
        presence=presence,
        expert_dropout=cfg.fusion.expert_dropout,
        device=cfg.training.device,
    )
    return head


class FusionMethod(Method):
    """A fusion head of one ``mode`` over the site experts' features.

    ``product``: this is the run's main fusion (fine-tuned end to end when configured, with a
    temperature); the other modes are frozen-feature heads kept for comparison.
    """

    def __init__(self, mode: str, *, product: bool = False, name: str | None = None) -> None:
        if mode not in FUSION_METHOD_NAMES:
            raise ArtifactError(
                f"unknown fusion mode {mode!r}; valid: {', '.join(FUSION_METHOD_NAMES)}"
            )
        self.mode = mode
        self.product = product
        self.name = name or FUSION_METHOD_NAMES[mode]
        self.head_: FusionClassifier | None = None
        self.experts_: list[SiteExpert] | None = None  # own fine-tuned copies, if any
        self.temperature_: float = 1.0

    @classmethod
    def configured(cls, cfg: Config, sites: Sequence[str]) -> list[Method]:
        """One head per mode of ``fusion.modes``, in that order; the first is the product."""
        product = cfg.fusion.modes[0]
        return [cls(mode, product=mode == product) for mode in cfg.fusion.modes]

    @classmethod
    def from_head(cls, name: str, head: FusionClassifier) -> FusionMethod:
        """A method around a head fitted elsewhere (leave-one-site-out), without copies."""
        method = cls(str(head.config["mode"]), name=name)
        method.head_ = head
        return method

    # -- training --------------------------------------------------------------------------------
    def _cache(self, ctx: TrainContext) -> ExpertFeatures:
        """The features the head learns from: the trained site experts'."""
        return ctx.require_features()

    def _start_experts(self, ctx: TrainContext) -> list[SiteExpert]:
        """The experts a fine-tuned fusion starts from: copies of the trained site experts."""
        experts = []
        for site in ctx.sites:
            expert = build_expert(ctx.cfg, ctx.num_classes)
            expert.load_state_dict(ctx.run.read_tensors(f"experts/{site}.safetensors"))
            experts.append(expert)
        return experts

    def _tuned(self, ctx: TrainContext) -> bool:
        return self.product and ctx.cfg.fusion.finetune_epochs > 0

    def is_trained(self, run: RunDir) -> bool:
        return run.has(f"fusion/{self.name}.safetensors")

    def fit(self, ctx: TrainContext) -> None:
        """Fit the head (and, for a fine-tuned product fusion, its expert copies) and write it."""
        if self.is_trained(ctx.run):
            return
        cfg, rows = ctx.cfg, ctx.require_rows()
        feats = self._cache(ctx)
        t0 = time.perf_counter()
        tuned = self._tuned(ctx)
        calib = (
            calibration_holdout(cfg, rows, ctx.data, ctx.require_features())
            if tuned
            else np.zeros(len(rows.labels), bool)
        )
        x, xl = feats.features[rows.positions], feats.logits[rows.positions]
        keep = ~calib if tuned else np.ones(len(rows.labels), bool)
        head, curve = fit_fusion(
            self.mode,
            x[keep],
            xl[keep],
            rows.labels[keep],
            cfg=cfg.fusion,
            num_classes=ctx.num_classes,
            seed=cfg.seed,
            presence=rows.presence[keep],
            expert_dropout=cfg.fusion.expert_dropout,
            device=cfg.training.device,
        )
        meta: dict[str, Any] = {
            "config": head.config,
            "loss_curve": curve,
            "n_fusion": rows.n_fusion,
            "n_cross_fit": rows.n_cross_fit,
        }
        if tuned:
            meta["finetune"] = self._finetune(ctx, head, rows, keep, calib)
            if "calibration" in meta["finetune"]:
                meta["calibration"] = meta["finetune"].pop("calibration")
        elif self.product:
            meta["calibration"] = _out_of_fold_temperature(ctx, self.mode, x, xl, rows)
        meta["seconds"] = time.perf_counter() - t0
        self.save(ctx.run, self.name, meta, head)
        extra = f" + {rows.n_cross_fit} cross-fitted" if rows.n_cross_fit else ""
        how = f", experts fine-tuned {cfg.fusion.finetune_epochs} epochs" if tuned else ""
        ctx.log(
            f"fusion head {self.name} ({self.mode}): {rows.n_fusion} fusion-split images{extra}{how}"
        )

    def _finetune(
        self,
        ctx: TrainContext,
        head: FusionClassifier,
        rows: HeadRows,
        train_rows: np.ndarray,
        calib_rows: np.ndarray,
    ) -> dict[str, Any]:
        """Fine-tune expert copies with ``head`` end to end; write them; fit the temperature."""
        cfg, data = ctx.cfg, ctx.data
        experts = self._start_experts(ctx)
        pos = {rid: i for i, rid in enumerate(data.ids)}
        cache_ids = ctx.require_features().ids
        data_rows = np.array([pos[cache_ids[j]] for j in rows.positions])
        images = normalize_rows(ctx.bank, data, data_rows[train_rows])
        system = FusedSystem(experts, head)
        epochs = cfg.fusion.finetune_epochs * cfg.fusion.finetune_soup
        x_cal = normalize_rows(ctx.bank, data, data_rows[calib_rows]) if calib_rows.any() else None

        def holdout_logits(model: FusedSystem) -> np.ndarray:
            """Logits on the held-out fusion-split images (never trained on)."""
            with torch.inference_mode():
                out = model(torch.from_numpy(x_cal))
            return np.asarray(out.logits.numpy())

        member_logits: list[np.ndarray] = []
        with make_progress(ctx.console) as progress:
            task = progress.add_task(f"fine-tune {self.name}", total=epochs * len(images), info="")
            curves = finetune_soup(
                system,
                images,
                rows.labels[train_rows],
                rows.presence[train_rows],
                cfg=cfg.fusion,
                num_classes=ctx.num_classes,
                seed=cfg.seed,
                batch_size=cfg.training.batch_size,
                on_epoch=lambda ep, loss: _epoch_done(
                    ctx, progress, task, f"{self.name} epoch {ep + 1}/{epochs} loss {loss:.3f}"
                ),
                on_batch=lambda k: progress.advance(task, k),
                on_member=(
                    (lambda m, model: member_logits.append(holdout_logits(model)))
                    if x_cal is not None and cfg.fusion.finetune_soup > 1
                    else None
                ),
                device=cfg.training.device,
                precision=cfg.training.precision,
            )
        self.save_copies(ctx.run, self.name, experts, ctx.sites)
        meta: dict[str, Any] = {
            "epochs": cfg.fusion.finetune_epochs,
            "soup": cfg.fusion.finetune_soup,
            "loss_curve": np.mean(curves, axis=0).tolist(),
        }
        if len(curves) > 1:
            meta["member_loss_curves"] = curves
        logits = holdout_logits(system) if x_cal is not None else None
        if member_logits and logits is not None:
            meta["soup_check"] = _soup_check(
                ctx, self.name, rows, calib_rows, member_logits, logits
            )
        if logits is not None:
            meta["calibration"] = temperature_record(
                logits,
                rows.labels[calib_rows],
                f"{int(calib_rows.sum())} held-out fusion-split images "
                f"({cfg.fusion.calibration_fraction:.0%} of its groups)",
            )
        return meta

    # -- artifacts -------------------------------------------------------------------------------
    @staticmethod
    def save(run: RunDir, name: str, meta: dict[str, Any], head: FusionClassifier) -> None:
        """Write fusion ``name``: its record ``fusion/<name>.json`` (``config``, loss curve,
        calibration, ...) and then its head, whose presence marks the method as finished.
        Central training and a federation's coordinator both write through this."""
        run.write_json(f"fusion/{name}.json", meta)
        run.write_tensors(f"fusion/{name}.safetensors", head.state_dict())

    @staticmethod
    def save_copies(
        run: RunDir, name: str, experts: Sequence[SiteExpert], sites: Sequence[str]
    ) -> None:
        """Write a fine-tuned fusion's own expert copies (``fusion/<name>.experts``)."""
        run.write_tensors(f"fusion/{name}.experts.safetensors", expert_states(experts, sites))

    # -- loading and predicting ------------------------------------------------------------------
    def load(self, ctx: LoadContext) -> FusionMethod:
        meta = ctx.run.read_json(f"fusion/{self.name}.json")
        source = ctx.run.root / "fusion" / f"{self.name}.json"
        try:
            head = FusionClassifier.from_config(meta["config"])
        except (KeyError, TypeError) as err:
            raise ArtifactError(f"{source}: field 'config' is malformed ({err!r})") from err
        head.load_state_dict(ctx.run.read_tensors(f"fusion/{self.name}.safetensors"))
        self.head_ = head.eval()
        self.temperature_ = _temperature(source, meta)
        rel = f"fusion/{self.name}.experts.safetensors"
        if ctx.run.has(rel):
            copies = [build_expert(ctx.cfg, ctx.num_classes) for _ in ctx.sites]
            load_expert_states(ctx.run.read_tensors(rel), copies, ctx.sites)
            self.experts_ = [c.to(ctx.device).eval() for c in copies]
        return self

    @property
    def head(self) -> FusionClassifier:
        """The fitted head."""
        if self.head_ is None:
            raise self._unfitted()
        return self.head_

    @property
    def networks(self) -> list[SiteExpert] | None:
        """The experts this fusion reads (its own fine-tuned copies), or ``None`` for the site
        experts."""
        return self.experts_

    def forward(self, batch: ImageBatch) -> dict[str, np.ndarray]:
        if self.experts_ is None:
            return {}
        return _expert_outputs(self.experts_, batch.normalized)

    def predict(
        self,
        experts: ExpertFeatures,
        own: OwnOutputs,
        mask: np.ndarray | None = None,
        *,
        calibrated: bool = False,
    ) -> MethodOutput:
        features, logits = (
            (own["features"], own["logits"])
            if "features" in own
            else (experts.features, experts.logits)
        )
        with torch.inference_mode():
            res = self.head(
                torch.from_numpy(features),
                torch.from_numpy(logits),
                torch.from_numpy(mask) if mask is not None else None,
            )
        z = res.logits.numpy()
        if calibrated:
            z = z / self.temperature_
        return MethodOutput(softmax_rows(z), res.weights.numpy())


def _epoch_done(ctx: TrainContext, progress: Any, task: Any, info: str) -> None:
    """Show a fine-tuning epoch on the bar, and as a line where no bar is drawn (a log file):
    a stage silent for many minutes looks hung."""
    progress.update(task, info=info)
    if ctx.console is not None and not ctx.console.is_terminal:
        ctx.console.print(f"  fine-tune {info}")


def _expert_outputs(experts: list[SiteExpert], x: np.ndarray) -> dict[str, np.ndarray]:
    """Features ``[B, E, D]`` and logits ``[B, E, K]`` of each expert on normalized ``x``."""
    xb = network_input(x, experts[0])
    feats, logits = [], []
    with torch.inference_mode():
        for expert in experts:
            z = expert.embed(xb)
            feats.append(z.float().cpu().numpy())
            logits.append(expert.head(z).float().cpu().numpy())
    return {"features": np.stack(feats, 1), "logits": np.stack(logits, 1)}


def _temperature(source: Any, meta: dict[str, Any]) -> float:
    entry = meta.get("calibration") or {}
    t = entry.get("temperature", 1.0)
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t < float("inf"):
        raise ArtifactError(
            f"{source}: field 'calibration.temperature' must be a positive number, got {t!r}"
        )
    return float(t)


def _out_of_fold_temperature(
    ctx: TrainContext, mode: str, x: np.ndarray, xl: np.ndarray, rows: HeadRows
) -> dict[str, Any]:
    """Temperature of the fusion fitted on out-of-fold logits (5 folds by group)."""
    cfg, num_classes = ctx.cfg, ctx.num_classes
    n_splits = min(5, len(set(rows.groups.tolist())))
    oof = np.zeros((len(rows.labels), num_classes), dtype=np.float32)
    for k, (tr, te) in enumerate(GroupKFold(n_splits=n_splits).split(x, rows.labels, rows.groups)):
        head = fit_head(
            cfg,
            mode,
            x[tr],
            xl[tr],
            rows.labels[tr],
            rows.presence[tr],
            num_classes,
            cfg.seed + 100 + k,
        )
        with torch.inference_mode():
            out = head(
                torch.from_numpy(np.ascontiguousarray(x[te])),
                torch.from_numpy(np.ascontiguousarray(xl[te])),
                torch.from_numpy(rows.presence[te]),
            )
        oof[te] = out.logits.numpy()
    return temperature_record(
        oof,
        rows.labels,
        f"out-of-fold logits of the fusion's training rows ({n_splits} folds by group)",
    )


def _soup_check(
    ctx: TrainContext,
    name: str,
    rows: HeadRows,
    calib_rows: np.ndarray,
    member_logits: list[np.ndarray],
    soup_logits: np.ndarray,
) -> dict[str, Any]:
    """Each soup member and the soup on the held-out images; logs whether the soup is measurably
    worse than its best member (only reported: choosing on ~170 images would choose on noise)."""
    check = compare_soup_to_members(
        rows.labels[calib_rows],
        rows.groups[calib_rows],
        member_logits,
        soup_logits,
        seed=ctx.cfg.seed,
    )
    best = max(check["balanced_accuracy_members"])
    lo, hi = check["soup_minus_best_member"]["ci95"]
    summary = (
        f"{name}: soup of {len(member_logits)} fine-tuned copies "
        f"{check['balanced_accuracy_soup']:.3f} balanced accuracy on the held-out "
        f"fusion-split images, best member {best:.3f} (difference 95% CI "
        f"{lo:+.3f} to {hi:+.3f})"
    )
    if check["below_best_member"]:
        ctx.log(
            f"[yellow]{summary}: the soup is measurably worse; it is kept (fusion.finetune_soup)[/]"
        )
    else:
        ctx.log(f"{summary}: within noise")
    return {**check, "on": f"{int(calib_rows.sum())} held-out fusion-split images"}
