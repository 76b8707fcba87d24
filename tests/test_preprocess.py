"""Behaviour tests for ``unimdm_jax.data.preprocess`` (CrystalDataset, caching, failures, splits).

Reference values come from the CSV read independently with pandas, from pymatgen's
StructureMatcher against the source CIFs, and from round trips (save/load, select/concatenate).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from unimdm_jax.data import preprocess
from unimdm_jax.data.io import structure_from_cif, test_subset_indices
from unimdm_jax.data.preprocess import (
    PROPERTY_NAMES,
    CrystalDataset,
    Failure,
    cache_key,
    load_policy_split,
    preprocess_file,
)
from unimdm_jax.metrics import match_rms

FIELDS = preprocess._CRYSTAL_FIELDS + preprocess._ATOM_FIELDS


def assert_datasets_equal(a: CrystalDataset, b: CrystalDataset) -> None:
    assert a.property_names == b.property_names
    for field in FIELDS:
        x, y = getattr(a, field), getattr(b, field)
        assert x.shape == y.shape, field
        if x.dtype.kind == "f":
            np.testing.assert_array_equal(x, y, err_msg=field)  # NaN == NaN here
        else:
            assert (x == y).all(), field


def write_rows(df: pd.DataFrame, path: Path) -> Path:
    df.to_csv(path, index=False, compression="gzip")
    return path


@pytest.fixture(scope="module")
def fixture_frame(fixture_csv) -> pd.DataFrame:
    return pd.read_csv(fixture_csv, keep_default_na=False, na_values=[""])


@pytest.fixture
def small_csv(tmp_path, fixture_frame) -> Path:
    """Five fixture rows, as their own CSV file."""
    return write_rows(fixture_frame.iloc[[0, 7, 19, 42, 99]], tmp_path / "small.csv.gz")


# --------------------------------------------------------------------------------------
# the fixture dataset


def test_fixture_dataset_shape_and_columns(fixture_dataset, fixture_frame):
    dataset, failures = fixture_dataset
    assert len(dataset) == 200 and failures == []
    assert dataset.material_id.tolist() == fixture_frame["material_id"].tolist()
    assert dataset.source.tolist() == [f"mp20_fixture.csv.gz:{i}" for i in range(200)]
    n = int(dataset.num_atoms.sum())
    for field in preprocess._ATOM_FIELDS:
        assert len(getattr(dataset, field)) == n, field
    for field in preprocess._CRYSTAL_FIELDS:
        assert len(getattr(dataset, field)) == 200, field
    offsets = dataset.atom_offsets
    assert offsets[0] == 0 and offsets[-1] == n and (np.diff(offsets) > 0).all()
    assert dataset.lattice_parameters.shape == (200, 6)
    assert ((dataset.spacegroup >= 1) & (dataset.spacegroup <= 230)).all()
    # anchors point inside their own crystal, at the first atom of their orbit
    for i in range(len(dataset)):
        anchor = dataset.anchor_index[offsets[i] : offsets[i + 1]]
        assert (anchor >= 0).all() and (anchor < dataset.num_atoms[i]).all()
        assert (anchor[anchor] == anchor).all()
        sites = json.loads(str(dataset.sites_json[i]))
        assert sum(m for _, _, m, _, _ in sites) == dataset.num_atoms[i]


def test_properties_equal_the_csv(fixture_dataset, fixture_frame):
    dataset, _ = fixture_dataset
    assert dataset.property_names == PROPERTY_NAMES
    for name in PROPERTY_NAMES:
        np.testing.assert_allclose(
            dataset.property(name), fixture_frame[name].to_numpy(float), rtol=0, atol=1e-12
        )
        assert dataset[3].properties[name] == pytest.approx(fixture_frame[name].iloc[3])


def test_conventional_cells_match_source_cifs(fixture_dataset, fixture_frame):
    dataset, _ = fixture_dataset
    for i in range(0, 200, 10):
        crystal = dataset[i]
        assert crystal.material_id == fixture_frame["material_id"].iloc[i]
        source = structure_from_cif(fixture_frame["cif"].iloc[i])
        assert match_rms(source, crystal.structure()) is not None, crystal.material_id
        assert crystal.structure().composition.reduced_formula == source.composition.reduced_formula


# --------------------------------------------------------------------------------------
# round trips


def test_save_load_round_trip(fixture_dataset, tmp_path):
    dataset, _ = fixture_dataset
    path = tmp_path / "data.npz"
    dataset.save(path)
    assert path.exists() and not list(tmp_path.glob("*.tmp*"))
    loaded = CrystalDataset.load(path)
    assert_datasets_equal(dataset, loaded)
    for field in FIELDS:
        assert getattr(loaded, field).dtype == getattr(dataset, field).dtype, field
    # loading needs no pickle (plain arrays only)
    with np.load(path, allow_pickle=False) as data:
        assert set(data.files) == set(FIELDS) | {"property_names"}


def test_select_and_concatenate(fixture_dataset):
    dataset, _ = fixture_dataset
    rng = np.random.default_rng(0)
    picked = rng.permutation(len(dataset))[:37]
    part = dataset.select(picked)
    assert len(part) == 37
    assert int(part.num_atoms.sum()) == len(part.atomic_numbers)
    for j, i in enumerate(picked):
        a, b = part[j], dataset[int(i)]
        assert a.material_id == b.material_id and a.sites == b.sites
        for field in (
            "atomic_numbers",
            "frac_coords",
            "wyckoff_ops",
            "anchor_index",
            "ops_rotation_pinv",
            "site_index",
        ):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
        np.testing.assert_array_equal(a.lattice_parameters, b.lattice_parameters)
    # evens + odds concatenated == select(evens then odds)
    evens, odds = np.arange(0, 200, 2), np.arange(1, 200, 2)
    joined = CrystalDataset.concatenate([dataset.select(evens), dataset.select(odds)])
    assert_datasets_equal(joined, dataset.select(np.concatenate([evens, odds])))
    # undoing the permutation gives back the dataset
    assert_datasets_equal(joined.select(np.argsort(np.concatenate([evens, odds]))), dataset)
    assert_datasets_equal(dataset.select(np.arange(len(dataset))), dataset)
    empty = dataset.select([])
    assert len(empty) == 0 and len(empty.atomic_numbers) == 0
    assert_datasets_equal(CrystalDataset.concatenate([empty, dataset]), dataset)


def test_concatenate_refuses_different_property_columns(fixture_dataset):
    dataset, _ = fixture_dataset
    part = dataset.select([0, 1])
    other = CrystalDataset(property_names=("band_gap", "other"), **{f: getattr(part, f) for f in FIELDS})
    with pytest.raises(ValueError):
        CrystalDataset.concatenate([part, other])


# --------------------------------------------------------------------------------------
# the cache


def _forbid_recompute(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("symmetrize_rows called although the cache is valid")

    monkeypatch.setattr(preprocess, "symmetrize_rows", boom)


def test_second_call_reads_the_cache(small_csv, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first, failures = preprocess_file(small_csv, cache_dir=cache, workers=1, progress=False)
    assert len(first) == 5 and failures == []
    assert len(list(cache.glob("small.csv.gz.*.npz"))) == 1
    assert len(list(cache.glob("small.csv.gz.*.failures.json"))) == 1
    _forbid_recompute(monkeypatch)
    second, failures2 = preprocess_file(small_csv, cache_dir=cache, workers=1, progress=False)
    assert failures2 == []
    assert_datasets_equal(first, second)


def test_cache_key_depends_on_settings_and_content(small_csv, tmp_path, fixture_frame, monkeypatch):
    assert cache_key(small_csv, 0.01) == cache_key(small_csv, 0.01)
    assert cache_key(small_csv, 0.01) != cache_key(small_csv, 0.001)
    other = write_rows(fixture_frame.iloc[[0, 7, 19, 42]], tmp_path / "other.csv.gz")
    assert cache_key(small_csv, 0.01) != cache_key(other, 0.01)
    assert cache_key(small_csv, 0.01) != cache_key(small_csv, 0.01, ("band_gap",))  # other columns

    cache = tmp_path / "cache"
    calls = []
    real = preprocess.symmetrize_rows

    def counting(rows, workers=None, symprec=0.01, progress=True, properties=preprocess.PROPERTY_NAMES):
        calls.append(symprec)
        return real(rows, workers, symprec, progress, properties)

    monkeypatch.setattr(preprocess, "symmetrize_rows", counting)
    preprocess_file(small_csv, cache_dir=cache, workers=1, symprec=0.01, progress=False)
    preprocess_file(small_csv, cache_dir=cache, workers=1, symprec=0.01, progress=False)
    assert calls == [0.01]
    dataset, _ = preprocess_file(small_csv, cache_dir=cache, workers=1, symprec=0.001, progress=False)
    assert calls == [0.01, 0.001]  # a new tolerance is a new cache entry
    assert (dataset.symprec <= 0.001).all()
    assert len(list(cache.glob("small.csv.gz.*.npz"))) == 2


def test_extraction_version_changes_the_cache_key(small_csv, monkeypatch):
    before = cache_key(small_csv, 0.01)
    monkeypatch.setattr(preprocess, "EXTRACTION_VERSION", preprocess.EXTRACTION_VERSION + 1)
    assert cache_key(small_csv, 0.01) != before


@pytest.mark.parametrize(
    "damage",
    [
        "data",
        "report",
        "truncate",
    ],
)
def test_corrupt_cache_is_rebuilt(small_csv, tmp_path, damage):
    cache = tmp_path / "cache"
    good, _ = preprocess_file(small_csv, cache_dir=cache, workers=1, progress=False)
    (data_path,) = cache.glob("small.csv.gz.*[0-9a-f].npz")
    report_path = data_path.with_name(data_path.name[: -len(".npz")] + ".failures.json")
    assert report_path.exists()
    if damage == "data":
        data_path.write_bytes(b"this is not an npz file")
    elif damage == "truncate":
        data_path.write_bytes(data_path.read_bytes()[:100])
    else:
        report_path.write_text("{not json")
    rebuilt, failures = preprocess_file(small_csv, cache_dir=cache, workers=1, progress=False)
    assert failures == []
    assert_datasets_equal(good, rebuilt)
    assert_datasets_equal(good, CrystalDataset.load(data_path))  # the cache file is valid again
    assert json.loads(report_path.read_text()) == []


def test_missing_report_triggers_recompute(small_csv, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    preprocess_file(small_csv, cache_dir=cache, workers=1, progress=False)
    for report in cache.glob("*.failures.json"):
        report.unlink()
    calls = []
    real = preprocess.symmetrize_rows
    monkeypatch.setattr(preprocess, "symmetrize_rows", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    dataset, _ = preprocess_file(small_csv, cache_dir=cache, workers=1, progress=False)
    assert calls == [1] and len(dataset) == 5


# --------------------------------------------------------------------------------------
# failures are reported, never dropped


def _overlapping_atoms_cif() -> str:
    from pymatgen.core import Lattice, Structure
    from pymatgen.io.cif import CifWriter

    structure = Structure(Lattice.cubic(4.0), ["Na", "Cl", "Cl"], [[0, 0, 0], [0, 0, 0], [0.5, 0.5, 0.5]])
    return str(CifWriter(structure))


def test_bad_rows_are_reported_by_material_id(tmp_path, fixture_frame, monkeypatch):
    good = fixture_frame.iloc[[3, 4, 5]].copy()
    bad = fixture_frame.iloc[[6, 8]].copy()
    bad["material_id"] = ["mp-garbage-cif", "mp-overlapping-atoms"]
    bad["cif"] = [
        "data_broken\n_cell_length_a nonsense\nthis is not a CIF at all\n",
        _overlapping_atoms_cif(),
    ]
    # bad rows in the middle and at the end: the order of the good ones must survive
    frame = pd.concat([good.iloc[:2], bad.iloc[:1], good.iloc[2:], bad.iloc[1:]])
    path = write_rows(frame, tmp_path / "bad.csv.gz")
    cache = tmp_path / "cache"
    dataset, failures = preprocess_file(path, cache_dir=cache, workers=2, progress=False)
    assert len(dataset) == 3 and len(failures) == 2
    assert len(dataset) + len(failures) == len(frame)  # nothing dropped silently
    assert dataset.material_id.tolist() == fixture_frame["material_id"].iloc[[3, 4, 5]].tolist()
    assert dataset.source.tolist() == ["bad.csv.gz:0", "bad.csv.gz:1", "bad.csv.gz:3"]
    assert [f.material_id for f in failures] == ["mp-garbage-cif", "mp-overlapping-atoms"]
    assert [f.source for f in failures] == ["bad.csv.gz:2", "bad.csv.gz:4"]
    for failure in failures:
        assert isinstance(failure, Failure)
        assert failure.reason and "\n" not in failure.reason.strip()
    # the failure report is cached too
    _forbid_recompute(monkeypatch)
    again, failures_again = preprocess_file(path, cache_dir=cache, workers=2, progress=False)
    assert failures_again == failures
    assert_datasets_equal(dataset, again)


def test_worker_count_does_not_change_the_result(small_csv):
    from unimdm_jax.data.io import read_rows

    rows = read_rows([small_csv])
    serial, f1 = preprocess.symmetrize_rows(rows, workers=1, progress=False)
    parallel, f2 = preprocess.symmetrize_rows(rows, workers=2, progress=False)
    assert f1 == f2 == []
    assert_datasets_equal(serial, parallel)


# --------------------------------------------------------------------------------------
# policy splits on a fake MP-20 folder (extraction replaced by a lookup, so that a 1,000+
# row val file is cheap; the split logic is what is under test here)


@pytest.fixture
def fake_mp20(tmp_path, fixture_frame, fixture_dataset, monkeypatch):
    """A fake ``mp_20`` folder: train_partial (30 rows), val (1,010 rows), test (40 rows).

    Rows reuse the fixture's CIFs under fresh ids; every row whose id ends in 7 'fails'.
    """
    dataset, _ = fixture_dataset
    root = tmp_path / "data"
    mp20 = root / "mp_20"
    mp20.mkdir(parents=True)

    def frame(prefix, n):
        picked = fixture_frame.iloc[np.arange(n) % len(fixture_frame)].copy()
        picked["material_id"] = [f"{prefix}-{i}" for i in range(n)]
        return picked

    write_rows(frame("tr", 30), mp20 / "train_partial.csv.gz")
    write_rows(frame("va", 1010), mp20 / "val.csv.gz")
    write_rows(frame("te", 40), mp20 / "test.csv.gz")

    def fake_symmetrize(rows, workers=None, symprec=0.01, progress=True, properties=None):
        crystals, sources, failures = [], [], []
        for row in rows:
            if row.material_id.endswith("7"):
                failures.append(Failure(row.material_id, row.source, "synthetic failure"))
                continue
            template = dataset[int(row.source.rsplit(":", 1)[1]) % len(dataset)]
            crystals.append(dataclasses.replace(template, material_id=row.material_id))
            sources.append(row.source)
        return CrystalDataset.from_crystals(crystals, sources), failures

    monkeypatch.setattr(preprocess, "symmetrize_rows", fake_symmetrize)
    return root


def _ids(n, prefix, keep=lambda i: True):
    return [f"{prefix}-{i}" for i in range(n) if keep(i) and not str(i).endswith("7")]


def test_policy_splits_on_a_fake_folder(fake_mp20, tmp_path):
    kwargs = {"cache_dir": tmp_path / "cache", "workers": 1, "progress": False}
    holdout, f_holdout = load_policy_split("holdout", fake_mp20, **kwargs)
    assert holdout.material_id.tolist() == _ids(1000, "va")
    assert {f.material_id for f in f_holdout} == {f"va-{i}" for i in range(1000) if str(i).endswith("7")}
    assert len(holdout) + len(f_holdout) == 1000

    train, f_train = load_policy_split("train", fake_mp20, **kwargs)
    assert train.material_id.tolist() == _ids(30, "tr") + _ids(1010, "va", lambda i: i >= 1000)
    assert len(train) + len(f_train) == 30 + 10
    assert not set(train.material_id) & set(holdout.material_id)

    test, f_test = load_policy_split("test", fake_mp20, **kwargs)
    assert test.material_id.tolist() == _ids(40, "te") and len(test) + len(f_test) == 40

    test_1k, f_1k = load_policy_split("test-1k", fake_mp20, **kwargs)
    wanted = [i for i in test_subset_indices().tolist() if i < 40]
    assert test_1k.material_id.tolist() == _ids(40, "te", lambda i: i in wanted)
    assert len(test_1k) + len(f_1k) == len(wanted)

    # the folder itself (without the mp_20 level) works too
    again, _ = load_policy_split("holdout", fake_mp20 / "mp_20", **kwargs)
    assert_datasets_equal(again, holdout)
    with pytest.raises(ValueError, match="unknown split"):
        load_policy_split("validation", fake_mp20, **kwargs)


@pytest.mark.shared_data
def test_shared_holdout_when_cached(shared_mp20, monkeypatch):
    """On the real data, only when a warm preprocessing cache exists (never recomputes here)."""
    val = shared_mp20 / "val.csv.gz"
    key = cache_key(val, preprocess.DEFAULT_SYMPREC)
    candidates = [
        preprocess.default_cache_dir(),
        Path(__file__).resolve().parents[1] / ".cache" / "preprocessed",
    ]
    cache = next(
        (
            c
            for c in candidates
            if (c / f"val.csv.gz.{key}.npz").exists() and (c / f"val.csv.gz.{key}.failures.json").exists()
        ),
        None,
    )
    if cache is None:
        pytest.skip("no warm preprocessing cache for val.csv.gz")
    _forbid_recompute(monkeypatch)  # a cache that turns out unreadable must not start a 9,047-row job
    holdout, failures = load_policy_split("holdout", shared_mp20.parent, cache_dir=cache, progress=False)
    ids = pd.read_csv(val, usecols=["material_id"])["material_id"].tolist()[:1000]
    failed = {f.material_id for f in failures}
    assert len(holdout) + len(failures) == 1000
    assert holdout.material_id.tolist() == [i for i in ids if i not in failed]
