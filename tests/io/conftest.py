"""Fixtures for the io tests: real sample files shipped with pydicom and nibabel."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import nibabel
import pydicom.data
import pytest


@pytest.fixture
def pydicom_file() -> Callable[[str], Path]:
    """Return a function giving the path of a pydicom test file, skipping when it is absent.

    ``download=False``: the tests never reach the network; files pydicom fetches on demand
    (e.g. ``emri_small.dcm``) are skipped unless already cached.
    """

    def get(name: str) -> Path:
        found = pydicom.data.get_testdata_file(name, download=False)
        if not found:
            pytest.skip(f"pydicom test file {name} is not available offline")
        return Path(str(found))

    return get


@pytest.fixture
def nibabel_file() -> Callable[[str], Path]:
    """Return a function giving the path of a file in ``nibabel/tests/data``, skipping if absent."""
    root = Path(nibabel.__file__).parent / "tests" / "data"

    def get(name: str) -> Path:
        path = root / name
        if not path.is_file():
            pytest.skip(f"nibabel test file {name} is not installed")
        return path

    return get
