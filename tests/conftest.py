"""Shared test fixtures: the committed 200-structure MP-20 fixture and ../shared data."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Most of the suite's time is XLA compiling the same tiny models again: every train() / sampler call
# builds fresh jitted functions, and the CLI and notebook tests run in subprocesses. JAX's persistent
# compilation cache, shared by the xdist workers and their subprocesses (environment variables), lets
# each identical program compile once per test session. A fresh folder per run: timings stay honest.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    tempfile.mkdtemp(prefix="unimdm-tests-xla-")
    if "PYTEST_XDIST_TESTRUNUID" not in os.environ
    else str(Path(tempfile.gettempdir()) / f"unimdm-tests-xla-{os.environ['PYTEST_XDIST_TESTRUNUID']}"),
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

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
