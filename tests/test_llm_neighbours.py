"""The nearest-composition prior (llm_torch.neighbours) and its use in ranking hypotheses."""

from __future__ import annotations

import math

import numpy as np
import pytest

from llm_torch.neighbours import CompositionNeighbours
from unimdm_jax.schema import ELEMENT_SYMBOLS


def table_of(rows):
    """rows: (counts, space group, band gap)."""
    fractions = np.zeros((len(rows), len(ELEMENT_SYMBOLS)), np.float32)
    for i, (counts, _, _) in enumerate(rows):
        total = sum(counts.values())
        for e, n in counts.items():
            fractions[i, ELEMENT_SYMBOLS.index(e)] = n / total
    return CompositionNeighbours(
        fractions, [sg for _, sg, _ in rows], {"band_gap": [v for *_, v in rows]}, "hand"
    )


ROWS = [
    ({"Na": 1, "Cl": 1}, 225, 5.0),
    ({"K": 1, "Cl": 1}, 225, 5.2),
    ({"Cs": 1, "Cl": 1}, 221, 5.1),
    ({"Na": 1, "Cl": 3}, 62, float("nan")),
]


def test_prior_is_the_kernel_weighted_vote_of_the_nearest_crystals():
    table = table_of(ROWS)
    # NaCl: L1 distances 0 (NaCl), 1 (KCl: Na 0.5 + K 0.5), 1 (CsCl), 0.5 (NaCl3: Na 0.25 + Cl 0.25)
    np.testing.assert_allclose(table.distances({"Na": 4, "Cl": 4}), [0.0, 1.0, 1.0, 0.5], atol=1e-6)
    tau = 0.5
    w = {0: 1.0, 1: math.exp(-2.0), 2: math.exp(-2.0), 3: math.exp(-1.0)}
    z = sum(w.values())
    prior = table.space_group_prior({"Na": 4, "Cl": 4}, k=4, tau=tau)
    assert prior == pytest.approx({225: (w[0] + w[1]) / z, 221: w[2] / z, 62: w[3] / z})
    # k = 2: only NaCl and NaCl3 vote
    assert table.space_group_prior({"Na": 1, "Cl": 1}, k=2, tau=tau) == pytest.approx(
        {225: 1 / (1 + math.exp(-1.0)), 62: math.exp(-1.0) / (1 + math.exp(-1.0))}
    )
    # log prior with a floor for groups nobody votes for
    logs = table.log_prior({"Na": 1, "Cl": 1}, [225, 1], k=2, tau=tau, floor=1e-3)
    assert logs[1] == pytest.approx(math.log(1e-3))
    assert logs[225] == pytest.approx(math.log(1 / (1 + math.exp(-1.0)) + 1e-3))


def test_ties_at_the_kth_place_go_to_the_crystals_closest_to_the_target_property():
    """NaCl's neighbours: itself (d = 0) and four chlorides at d = 1 (one with a float32 rounding
    difference of 2e-7, still a tie). With k = 2 the second vote goes to the chloride whose band gap
    is closest to the target (unknown gaps last), or to the first in table order without a target."""
    rows = [
        ({"Na": 1, "Cl": 1}, 225, 5.0),
        ({"K": 1, "Cl": 1}, 225, 1.0),
        ({"Cs": 1, "Cl": 1}, 221, 4.0),
        ({"Rb": 1, "Cl": 1}, 62, float("nan")),
        ({"Li": 1, "Cl": 1}, 216, 7.0),
    ]
    table = table_of(rows)
    li, cl = ELEMENT_SYMBOLS.index("Li"), ELEMENT_SYMBOLS.index("Cl")
    table.fractions[4, li], table.fractions[4, cl] = np.float32(0.5000001), np.float32(0.4999999)
    assert table.distances({"Na": 1, "Cl": 1})[4] != table.distances({"Na": 1, "Cl": 1})[1]  # float noise...
    assert list(table.nearest({"Na": 1, "Cl": 1}, 5, "band_gap", 4.1)) == [0, 2, 4, 1, 3]  # ...yet a tie
    assert list(table.nearest({"Na": 1, "Cl": 1}, 2, "band_gap", 6.5)) == [0, 4]
    assert list(table.nearest({"Na": 1, "Cl": 1}, 2)) == [0, 1]  # no target: table order
    assert list(table.nearest({"Na": 1, "Cl": 1}, 2, "formation_energy_per_atom", 1.0)) == [
        0,
        1,
    ]  # no such values
    tau = 0.5
    w = math.exp(-1.0 / tau)
    assert table.space_group_prior(
        {"Na": 2, "Cl": 2}, k=2, tau=tau, property_name="band_gap", target=4.1
    ) == pytest.approx({225: 1 / (1 + w), 221: w / (1 + w)})
    assert table.space_group_prior(
        {"Na": 2, "Cl": 2}, k=2, tau=tau, property_name="band_gap", target=1.2
    ) == pytest.approx({225: 1.0})
    logs = table.log_prior(
        {"Na": 1, "Cl": 1}, [221, 216], k=2, tau=tau, floor=1e-3, property_name="band_gap", target=6.9
    )
    assert logs == pytest.approx({221: math.log(1e-3), 216: math.log(w / (1 + w) + 1e-3)}, rel=1e-5)


def test_table_round_trip_and_corrupt_file(tmp_path):
    table = table_of(ROWS)
    path = table.save(tmp_path / "t.npz")
    again = CompositionNeighbours.load(path)
    np.testing.assert_array_equal(again.fractions, table.fractions)
    np.testing.assert_array_equal(again.space_groups, table.space_groups)
    np.testing.assert_allclose(again.values["band_gap"], table.values["band_gap"], equal_nan=True)
    assert again.source == "hand"
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a table")
    with pytest.raises(ValueError, match="cannot read composition table") as info:
        CompositionNeighbours.load(bad)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="cannot read composition table"):
        CompositionNeighbours.load(tmp_path / "missing.npz")


def test_embedded_table_matches_the_training_split():
    from llm_torch.neighbours import DEFAULT_TABLE

    table = CompositionNeighbours.load(DEFAULT_TABLE)
    assert len(table) == 28218 and "train" in table.source
    assert DEFAULT_TABLE.stat().st_size < 2e6
    np.testing.assert_allclose(table.fractions.sum(1), 1.0, atol=1e-5)
    assert set(np.unique(table.space_groups)) <= set(range(1, 231))


@pytest.mark.shared_data
def test_embedded_table_holds_the_policy_train_split_and_no_test_row(shared_mp20):
    """Band gaps and formation energies of the table = those of train_partial + val[1000:] (CSV
    columns, read independently of the symmetrization); none of the holdout or test rows."""
    import pandas as pd

    from llm_torch.neighbours import DEFAULT_TABLE

    table = CompositionNeighbours.load(DEFAULT_TABLE)
    cols = ["band_gap", "formation_energy_per_atom"]
    train = pd.concat(
        [
            pd.read_csv(shared_mp20 / "train_partial.csv.gz", usecols=cols),
            pd.read_csv(shared_mp20 / "val.csv.gz", usecols=cols).iloc[1000:],
        ]
    )
    key = lambda bg, fe: (float(np.float32(bg)), float(np.float32(fe)))  # noqa: E731  (the table stores float32)
    ours = sorted(
        key(b, f) for b, f in zip(table.values["band_gap"], table.values["formation_energy_per_atom"])
    )
    theirs = sorted(key(b, f) for b, f in zip(train.band_gap, train.formation_energy_per_atom))
    assert len(ours) <= len(theirs) <= len(ours) + 50  # rows that failed symmetrization are absent
    from collections import Counter

    assert not Counter(ours) - Counter(theirs)
