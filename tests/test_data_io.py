"""Tests for unimdm_jax.data.io / stats / the data CLI (no network, < 10 s)."""

from __future__ import annotations

import gzip
import json
import math
import subprocess
import sys
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from unimdm_jax.data.__main__ import build_parser, main
from unimdm_jax.data.io import (
    TEST_1K,
    CrystalRow,
    DatasetError,
    default_data_root,
    iter_rows,
    mp20_split,
    policy_rows,
    read_rows,
    structure_from_cif,
    test_subset_indices,
)
from unimdm_jax.data.stats import compute_stats, format_stats
from unimdm_jax.schema.tables import crystal_system

FIXTURE = Path(__file__).parent / "fixtures" / "mp20_fixture.csv.gz"
MP20_PROPS = ("formation_energy_per_atom", "band_gap", "e_above_hull")
REPO = Path(__file__).resolve().parents[1]


def _pandas_fixture() -> pd.DataFrame:
    return pd.read_csv(FIXTURE)


def _parse(cif: str):
    from pymatgen.core import Structure

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Structure.from_str(cif, fmt="cif")


@pytest.fixture(scope="module")
def fixture_rows() -> list[CrystalRow]:
    return read_rows(FIXTURE)


@pytest.fixture(scope="module")
def fixture_structures(fixture_rows):
    return [_parse(r.cif) for r in fixture_rows]


# --------------------------------------------------------------------------------------
# reading


def test_fixture_rows(fixture_rows):
    df = _pandas_fixture()
    assert len(fixture_rows) == 200 == len(df)
    assert [r.material_id for r in fixture_rows] == df["material_id"].tolist()
    assert len({r.material_id for r in fixture_rows}) == 200
    assert [r.source for r in fixture_rows] == [f"mp20_fixture.csv.gz:{i}" for i in range(200)]
    for r, (_, ref) in zip(fixture_rows, df.iterrows()):
        assert set(r.properties) == set(MP20_PROPS)
        assert math.isfinite(r.properties["formation_energy_per_atom"])
        assert math.isfinite(r.properties["band_gap"]) and r.properties["band_gap"] >= 0
        for k in MP20_PROPS:
            assert r.properties[k] == pytest.approx(ref[k], nan_ok=True)
        assert r.formula == ref["pretty_formula"]
        assert r.spacegroup_number == ref["spacegroup.number"]
        assert r.cif == ref["cif"]


def test_fixture_is_holdout_with_variety(fixture_rows):
    """The fixture covers all 7 crystal systems and P/A/C/I/F/R centrings."""
    from pymatgen.symmetry.groups import sg_symbol_from_int_number

    sgs = [r.spacegroup_number for r in fixture_rows]
    assert {crystal_system(s) for s in sgs} == {
        "triclinic",
        "monoclinic",
        "orthorhombic",
        "tetragonal",
        "trigonal",
        "hexagonal",
        "cubic",
    }
    assert {sg_symbol_from_int_number(s)[0] for s in sgs} >= set("PACIFR")
    assert len(set(sgs)) >= 40


def test_cif_parses_and_matches_formula(fixture_rows, fixture_structures):
    from pymatgen.core import Composition

    for r, s in zip(fixture_rows, fixture_structures):
        assert 1 <= len(s) <= 20
        assert s.composition.reduced_composition.almost_equals(Composition(r.formula).reduced_composition), (
            r.source
        )
    # the library function gives the same structure as a direct pymatgen parse
    for r, s in list(zip(fixture_rows, fixture_structures))[:10]:
        t = structure_from_cif(r.cif)
        assert t.composition == s.composition and len(t) == len(s)
        assert np.allclose(t.lattice.matrix, s.lattice.matrix)
    assert fixture_rows[0].structure().composition == fixture_structures[0].composition


def test_structure_from_cif_bad():
    with pytest.raises(DatasetError, match="cannot parse CIF"):
        structure_from_cif("data_x\n_cell_length_a 1\n")
    with pytest.raises(DatasetError):
        structure_from_cif("not a cif at all")


def test_skip_limit_across_files():
    rows = read_rows([FIXTURE, FIXTURE], skip=195, limit=10)
    assert [r.source for r in rows] == [f"mp20_fixture.csv.gz:{i}" for i in range(195, 200)] + [
        f"mp20_fixture.csv.gz:{i}" for i in range(5)
    ]
    assert read_rows(FIXTURE, limit=0) == []
    assert read_rows(FIXTURE, skip=500) == []
    assert len(read_rows([FIXTURE, FIXTURE])) == 400
    it = iter_rows(FIXTURE, limit=3)
    assert not isinstance(it, list)
    assert [r.source for r in it] == [f"mp20_fixture.csv.gz:{i}" for i in range(3)]
    with pytest.raises(DatasetError):
        read_rows(FIXTURE, skip=-1)


def test_plain_csv_with_upstream_index_column(tmp_path, fixture_rows):
    df = pd.read_csv(FIXTURE, dtype=str, keep_default_na=False).head(7)
    df.index = [11, 5, 3, 8, 2, 99, 0]  # upstream files carry a shuffled pandas index
    plain = tmp_path / "val.csv"
    df.to_csv(plain)  # header starts with "," like the CDVAE files
    assert plain.read_text().startswith(",material_id,")
    rows = read_rows(plain)
    assert [r.source for r in rows] == [f"val.csv:{i}" for i in range(7)]
    for a, b in zip(rows, fixture_rows[:7]):
        assert (a.material_id, a.cif, a.formula, a.spacegroup_number) == (
            b.material_id,
            b.cif,
            b.formula,
            b.spacegroup_number,
        )
        assert a.properties == pytest.approx(b.properties, nan_ok=True)
    # gzip detected by content, not by name
    gz = tmp_path / "val_gz_without_suffix.csv"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    assert [r.material_id for r in read_rows(gz)] == [r.material_id for r in rows]


def test_other_dataset_layouts(tmp_path, fixture_rows):
    cif = fixture_rows[0].cif
    carbon = tmp_path / "carbon.csv"
    pd.DataFrame({"material_id": ["17", "18"], "cif": [cif, cif], "energy_per_atom": [-9.1, ""]}).to_csv(
        carbon
    )
    rows = read_rows(carbon)
    assert rows[0].material_id == "17" and rows[0].formula == "" and rows[0].spacegroup_number is None
    assert rows[0].properties == {"energy_per_atom": -9.1}
    assert math.isnan(rows[1].properties["energy_per_atom"])
    rows = read_rows(carbon, properties=["band_gap", "energy_per_atom"])
    assert list(rows[0].properties) == ["band_gap", "energy_per_atom"]
    assert math.isnan(rows[0].properties["band_gap"]) and rows[0].properties["energy_per_atom"] == -9.1

    perov = tmp_path / "perov.csv.gz"
    pd.DataFrame(
        {
            "material_id": [3961],
            "cif": [cif],
            "formula": ["TiOsOFN"],
            "heat_all": [1.16],
            "heat_ref": [1.43],
            "dir_gap": [0.0],
            "ind_gap": [0.0],
            "note": ["text"],
        }
    ).to_csv(perov)
    (row,) = read_rows(perov)
    assert row.material_id == "3961" and row.formula == "TiOsOFN"
    assert set(row.properties) == {"heat_all", "heat_ref", "dir_gap", "ind_gap"}  # "note" is not numeric


def test_read_errors(tmp_path):
    with pytest.raises(DatasetError, match="no such file") as ei:
        read_rows(tmp_path / "missing.csv.gz")
    assert "\n" not in str(ei.value)
    with pytest.raises(DatasetError, match="no such file"):  # checked before any reading
        list(iter_rows([FIXTURE, tmp_path / "missing.csv"]))

    nocif = tmp_path / "nocif.csv"
    pd.DataFrame({"material_id": ["a"], "band_gap": [1.0]}).to_csv(nocif, index=False)
    with pytest.raises(DatasetError, match=r"missing required column\(s\) cif"):
        read_rows(nocif)

    fake_gz = tmp_path / "fake.csv.gz"
    fake_gz.write_text("material_id,cif\na,b\n")
    with pytest.raises(DatasetError, match="not a valid gzip"):
        read_rows(fake_gz)

    truncated = tmp_path / "truncated.csv.gz"
    truncated.write_bytes(FIXTURE.read_bytes()[:5000])
    with pytest.raises(DatasetError, match="unreadable gzip") as ei:
        read_rows(truncated)
    assert "\n" not in str(ei.value)

    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DatasetError, match="empty"):
        read_rows(empty)
    assert issubclass(DatasetError, ValueError)


# --------------------------------------------------------------------------------------
# policy


def test_test_subset_indices():
    idx = test_subset_indices()
    ref = np.sort(np.random.default_rng(20240601).choice(9046, 1000, replace=False))
    assert np.array_equal(idx, ref)
    assert len(TEST_1K) == 1000 and list(TEST_1K) == idx.tolist()
    assert all(a < b for a, b in zip(TEST_1K, TEST_1K[1:])) and 0 <= TEST_1K[0] and TEST_1K[-1] < 9046
    assert test_subset_indices(10, 3, seed=1).tolist() == sorted(
        np.random.default_rng(1).choice(10, 3, replace=False).tolist()
    )
    with pytest.raises(ValueError):
        test_subset_indices(5, 6)


def test_default_data_root(monkeypatch, tmp_path):
    monkeypatch.setenv("UNIMDM_DATA", str(tmp_path))
    assert default_data_root() == tmp_path
    monkeypatch.delenv("UNIMDM_DATA")
    shared = REPO.parent / "shared" / "data"
    root = default_data_root()
    if shared.is_dir():
        assert root == shared.resolve()
    else:
        assert root == Path.home() / ".cache" / "unimdm" / "data"


def test_policy_on_fake_layout(tmp_path):
    """Policy slicing on a small fake MP-20 folder (no shared data needed)."""
    d = tmp_path / "mp_20"
    d.mkdir()
    df = pd.read_csv(FIXTURE, dtype=str, keep_default_na=False)
    df.iloc[:10].to_csv(d / "train_partial.csv.gz", index=False)
    df.iloc[10:].to_csv(d / "val.csv.gz", index=False)  # 190 rows
    df.iloc[:50].to_csv(d / "test.csv", index=False)
    train = mp20_split("train", tmp_path)
    assert train.describe() == "train = train_partial.csv.gz[all] + val.csv.gz[1000:]"
    assert policy_rows(tmp_path, "holdout")[-1].source == "val.csv.gz:189"
    assert len(policy_rows(tmp_path, "train")) == 10  # val has < 1000 rows here
    assert len(policy_rows(d, "test")) == 50  # root may also be the mp_20 folder itself
    with pytest.raises(DatasetError, match="unknown MP-20 split"):
        mp20_split("val", tmp_path)
    with pytest.raises(DatasetError, match="no MP-20 data"):
        mp20_split("test", tmp_path / "nowhere")


SHARED_MP20 = default_data_root() / "mp_20"


@pytest.mark.shared_data
@pytest.mark.skipif(not SHARED_MP20.is_dir(), reason=f"{SHARED_MP20} absent")
def test_policy_counts_shared():
    train = policy_rows(None, "train")
    holdout = policy_rows(None, "holdout")
    test = policy_rows(None, "test")
    assert (len(train), len(holdout), len(test)) == (28218, 1000, 9046)
    assert holdout[0].source == "val.csv.gz:0" and holdout[-1].source == "val.csv.gz:999"
    val_part = [r for r in train if r.source.startswith("val.csv.gz:")]
    assert len(val_part) == 8047 and val_part[0].source == "val.csv.gz:1000"
    assert val_part[-1].source == "val.csv.gz:9046"
    ids = [{r.material_id for r in s} for s in (train, holdout, test)]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    sub = policy_rows(None, "test_1k")
    assert [r.source for r in sub] == [f"test.csv.gz:{i}" for i in TEST_1K]
    assert {r.material_id for r in sub} <= ids[2]
    # the fixture comes from the holdout
    assert {r.material_id for r in read_rows(FIXTURE)} <= ids[1]


# --------------------------------------------------------------------------------------
# stats


def test_stats_matches_independent_counts(fixture_structures):
    st = compute_stats(FIXTURE, processes=2, progress=False)
    df = _pandas_fixture()
    assert st.rows == len(df) == 200 and st.parse_failures == []
    assert st.spacegroups == {int(k): int(v) for k, v in df["spacegroup.number"].value_counts().items()}
    assert st.spacegroup_missing == 0
    assert st.atoms_per_cell == dict(Counter(len(s) for s in fixture_structures))
    elem = Counter(el.symbol for s in fixture_structures for el in s.composition.elements)
    assert st.element_counts == dict(elem) and st.n_elements == len(elem)
    # the CSV's own `elements` column agrees with the CIFs
    col = Counter(e for lst in df["elements"] for e in eval(lst))  # noqa: S307 - trusted fixture
    assert st.element_counts == dict(col)
    for k in MP20_PROPS:
        s = st.properties[k]
        assert s.count == df[k].notna().sum() and s.missing == df[k].isna().sum()
        assert (s.min, s.mean, s.max) == pytest.approx((df[k].min(), df[k].mean(), df[k].max()))
    assert sum(st.crystal_systems.values()) == 200

    serial = compute_stats(FIXTURE, processes=1, progress=False)
    assert serial.to_dict() == st.to_dict()

    text = format_stats(st)
    assert "rows: 200" in text and f"elements: {st.n_elements} distinct" in text
    assert "225 Fm-3m" in text and "formation_energy_per_atom" in text


def test_stats_parse_failure_and_missing_columns(tmp_path, fixture_rows):
    f = tmp_path / "two.csv"
    pd.DataFrame({"material_id": ["a", "b"], "cif": [fixture_rows[0].cif, "garbage"]}).to_csv(f, index=False)
    st = compute_stats(f, processes=1, progress=False)
    assert st.rows == 2 and len(st.parse_failures) == 1 and st.parse_failures[0][0] == "two.csv:1"
    assert st.spacegroups == {} and st.spacegroup_missing == 2 and st.properties == {}
    assert "CIF parse failures: 1" in format_stats(st)


# --------------------------------------------------------------------------------------
# CLI


def test_cli_stats_json_and_text(capsys):
    assert main(["stats", str(FIXTURE), "--json", "-q", "--limit", "50"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["rows"] == 50 and sum(out["atoms_per_cell"].values()) == 50
    assert set(out["properties"]) == set(MP20_PROPS)
    assert main(["stats", str(FIXTURE), "-q", "--limit", "20", "--processes", "1"]) == 0
    assert "rows: 20" in capsys.readouterr().out


def test_cli_error_paths(tmp_path, capsys):
    assert main(["stats", str(tmp_path / "missing.csv")]) == 1
    cap = capsys.readouterr()
    assert cap.out == ""
    assert cap.err.count("\n") == 1 and cap.err.startswith("error: ") and "no such file" in cap.err

    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    assert main(["stats", str(bad), "--json"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing required column" in err

    assert main(["verify", str(tmp_path / "nowhere")]) == 1
    assert capsys.readouterr().err.count("\n") == 1


def test_cli_subprocess_missing_file(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "unimdm_jax.data", "stats", str(tmp_path / "nope.csv.gz")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ") and "no such file" in proc.stderr


def test_parser_discovers_commands_and_is_lazy():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert {"download", "verify", "stats"} <= set(sub.choices)
    code = (
        "import sys, unimdm_jax.data; before = set(sys.modules);"
        "from unimdm_jax.data.__main__ import build_parser; build_parser();"
        "new = set(sys.modules) - before;"
        "heavy = sorted(m for m in new if m.split('.')[0] in {'pymatgen', 'pandas', 'jax', 'numpy', 'tqdm'});"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
