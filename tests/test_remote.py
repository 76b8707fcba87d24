"""The one-shot accelerator path at a tiny size on CPU: arrays in, train for a time budget,
sample, weights in bfloat16 shards and samples out, matching here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

# the JAX stage's tests: skipped on an install without JAX (the torch stage alone, `.[llm]`)
jax = pytest.importorskip("jax")

from unimdm_jax import remote  # noqa: E402
from unimdm_jax.checkpoint import load_model  # noqa: E402

pytestmark = pytest.mark.slow  # three compilations of a tiny model and a 20-step sampler


@pytest.fixture(scope="module")
def packed(fixture_dataset, tmp_path_factory):
    """What ``pack`` writes, from the committed fixture (train / holdout / test slices)."""
    dataset, _ = fixture_dataset
    folder = tmp_path_factory.mktemp("packed")
    for split, rows in (
        ("train", np.arange(0, 120)),
        ("holdout", np.arange(120, 150)),
        ("test", np.arange(150, 200)),
    ):
        dataset.select(rows).save(folder / f"{split}.npz")
    return folder


@pytest.fixture(scope="module")
def remote_run(packed, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    workdir = tmp_path_factory.mktemp("work") / "run"
    overrides = {
        "model.hidden": 32,
        "model.num_layers": 1,
        "model.num_heads": 2,
        "model.num_frequencies": 4,
        "diffusion.timesteps": 20,
        "fixed_budget": True,  # one compiled shape: the rate measurement and the run compile once each
        "eval_batches": 2,
    }
    config = Path(__file__).resolve().parents[1] / "configs" / "dit_mp20_cpu.py"
    report = remote.run(
        packed,
        str(config),
        out,
        train_seconds=4,
        sample_seconds=600,
        workdir=workdir,
        batch_size=8,
        sample_batch_size=4,
        overrides=overrides,
        shard_mb=0.02,
        sample_limit=10,
    )
    return out, workdir, report


def test_run_writes_sharded_bfloat16_weights_that_load_back(remote_run):
    out, workdir, report = remote_run
    shards = sorted(out.glob("weights-*.safetensors"))
    assert len(shards) > 1 and all(p.stat().st_size < 0.02e6 + 4096 for p in shards)
    assert report["weight_shards"] == [p.name for p in shards]
    _, ema, _, _ = load_model(workdir)
    loaded = remote.load_shards(out)
    expected, found = jax.tree_util.tree_leaves(ema), jax.tree_util.tree_leaves(loaded)
    assert len(expected) == len(found)
    for a, b in zip(expected, found):
        np.testing.assert_allclose(b, np.asarray(a), rtol=1e-2, atol=1e-2)  # bfloat16: 8 bits of mantissa
    assert json.loads((out / "config.json").read_text())["model"]["hidden"] == 32
    assert report["steps"] >= 1 and report["sampled"] == 10 and report["timesteps"] == 20


def test_samples_keep_each_crystals_composition(remote_run, packed):
    from unimdm_jax.data.preprocess import CrystalDataset

    out, _, _ = remote_run
    test = CrystalDataset.load(packed / "test.npz")
    with np.load(out / "samples.npz") as samples:
        assert list(samples["source"]) == list(test.source[:10])
        np.testing.assert_array_equal(samples["num_atoms"], test.num_atoms[:10])
        np.testing.assert_array_equal(samples["atomic_numbers"], test.atomic_numbers[: test.atom_offsets[10]])
        assert samples["frac_coords"].shape == (int(test.num_atoms[:10].sum()), 3)
        assert np.all(np.isfinite(samples["lattice_parameters"]))


def test_match_scores_the_true_structures_as_all_matched(remote_run, packed, fixture_csv, tmp_path):
    """Independent check of the matching path: samples.npz holding the symmetrized source
    structures themselves must match every CIF, with RMSE ~ 0."""
    from unimdm_jax.data.preprocess import CrystalDataset

    test = CrystalDataset.load(packed / "test.npz").select(np.arange(6))
    np.savez_compressed(
        tmp_path / "samples.npz",
        source=test.source,
        num_atoms=test.num_atoms,
        atomic_numbers=test.atomic_numbers,
        lattice_parameters=test.lattice_parameters,
        frac_coords=test.frac_coords,
    )
    result = remote.match(tmp_path, fixture_csv, processes=1)
    assert result["n"] == 6 and result["match_rate"] == 1.0 and result["rmse"] < 1e-3
    sampled = remote.match(remote_run[0], fixture_csv, processes=1)  # the tiny model's own samples
    assert sampled["n"] == 10 and 0.0 <= sampled["match_rate"] <= 1.0
