"""Shared test fixtures: the committed 200-structure MP-20 fixture and ../shared data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

FIXTURE_CSV = Path(__file__).parent / "fixtures" / "mp20_fixture.csv.gz"
SHARED_MP20 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mp_20"


@pytest.fixture(scope="session")
def fixture_csv() -> Path:
    return FIXTURE_CSV


@pytest.fixture(scope="session")
def fixture_dataset(tmp_path_factory):
    """The fixture, symmetrized (dataset, failures), cached in a per-session folder."""
    from unimdm_jax.data.preprocess import preprocess_file

    return preprocess_file(FIXTURE_CSV, cache_dir=tmp_path_factory.mktemp("cache"), workers=2, progress=False)


@pytest.fixture(scope="session")
def shared_mp20() -> Path:
    if not (SHARED_MP20 / "test.csv.gz").exists():
        pytest.skip("../shared/data/mp_20 is not present")
    return SHARED_MP20
