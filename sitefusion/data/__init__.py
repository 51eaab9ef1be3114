"""Data layer: manifests, group-wise splits, image stacks and synthetic multi-site sets."""

from sitefusion.data.images import conform, load_image_stack
from sitefusion.data.manifest import Manifest, Record, load_manifest, split_manifest_by_site
from sitefusion.data.splits import (
    SPLIT_NAMES,
    LeakageError,
    check_leakage,
    group_splits,
    load_split_table,
    load_splits,
    make_splits,
    save_splits,
    split_ids,
    splits_csv,
)
from sitefusion.data.synthetic import (
    generate_from_config,
    generate_synthetic_dataset,
    make_synthetic_arrays,
)

__all__ = [
    "SPLIT_NAMES",
    "LeakageError",
    "Manifest",
    "Record",
    "check_leakage",
    "conform",
    "generate_from_config",
    "generate_synthetic_dataset",
    "group_splits",
    "load_image_stack",
    "load_manifest",
    "load_split_table",
    "load_splits",
    "make_splits",
    "make_synthetic_arrays",
    "save_splits",
    "split_ids",
    "split_manifest_by_site",
    "splits_csv",
]
