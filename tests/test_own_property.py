"""A property of the user's own (density, from the structures themselves): the vocabulary, the
preprocessing with ``--properties NAME:UNIT``, the trainer's ``--set`` overrides and the one-line
errors. The whole path (training, fine-tuning, generation) runs in notebooks/05_your_own_data.ipynb,
which tests/test_notebooks.py executes."""

from __future__ import annotations

import dataclasses
import gzip
import json
from pathlib import Path

import pandas as pd
import pytest
from pymatgen.core import Structure

# the JAX stage's tests: skipped on an install without JAX (the torch stage alone, `.[llm]`)
pytest.importorskip("jax")  # unimdm_jax.config, .model and .train import JAX

from unimdm_jax import schema  # noqa: E402
from unimdm_jax.config import load_config, register_properties  # noqa: E402
from unimdm_jax.data.__main__ import main as data_main  # noqa: E402
from unimdm_jax.data.preprocess import CrystalDataset, preprocess_file  # noqa: E402
from unimdm_jax.model import ModelConfig  # noqa: E402
from unimdm_jax.schema import properties as vocabulary  # noqa: E402
from unimdm_jax.train import override  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def clean_vocabulary():
    """The property vocabulary as it was before the test (registration is process-wide)."""
    units, aliases = dict(vocabulary.KNOWN_PROPERTY_UNITS), dict(vocabulary.PROPERTY_ALIASES)
    yield
    vocabulary.KNOWN_PROPERTY_UNITS.clear()
    vocabulary.KNOWN_PROPERTY_UNITS.update(units)
    vocabulary.PROPERTY_ALIASES.clear()
    vocabulary.PROPERTY_ALIASES.update(aliases)


@pytest.fixture
def density_csv(tmp_path, fixture_csv):
    """Twelve fixture crystals with their density (pymatgen, g/cm3) and a text column."""
    with gzip.open(fixture_csv, "rt") as handle:
        frame = pd.read_csv(handle).iloc[:12]
    own = pd.DataFrame(
        {
            "material_id": frame["material_id"],
            "cif": frame["cif"],
            "density": [Structure.from_str(c, fmt="cif").density for c in frame["cif"]],
            "label": [f"sample {i}" for i in range(len(frame))],
        }
    )
    path = tmp_path / "own.csv"
    own.to_csv(path, index=False)
    return path, own


def record_with(name: str, value: float, unit: str) -> dict:
    return {
        "schema_version": schema.SCHEMA_VERSION,
        "composition": {"Na": 4, "Cl": 4},
        "space_group": {"number": 225, "symbol": "Fm-3m"},
        "wyckoff": [
            {"element": "Na", "letter": "a", "multiplicity": 4},
            {"element": "Cl", "letter": "b", "multiplicity": 4},
        ],
        "properties": [{"name": name, "value": value, "unit": unit}],
        "provenance": {"source": "test"},
    }


def test_a_registered_property_has_its_unit_checked_like_the_built_in_ones(clean_vocabulary):
    assert schema.validate_record(record_with("density", 2.16, "kg/m3"))  # not yet known: any unit
    assert schema.register_property("density", "g/cm3") == "density"
    assert schema.canonical_property("Density") == "density"
    assert schema.validate_record(record_with("density", 2.16, "g/cm3")).property("density") == 2.16
    with pytest.raises(schema.SchemaError, match="g/cm3"):
        schema.validate_record(record_with("density", 2160.0, "kg/m3"))
    schema.register_property("density", "g/cm3")  # again, same unit: fine
    with pytest.raises(ValueError, match="already known"):
        schema.register_property("density", "kg/m3")
    with pytest.raises(ValueError, match="already known"):
        schema.register_property("band_gap", "meV")
    with pytest.raises(ValueError, match="alias"):
        schema.register_property("bg", "eV")
    for bad in ("Density", "2theta", "bulk-modulus", ""):
        with pytest.raises(ValueError, match="lower case"):
            schema.register_property(bad, "GPa")


def test_property_specs_parse_names_and_units():
    assert schema.parse_property_specs("density:g/cm3, bulk_modulus:GPa") == {
        "density": "g/cm3",
        "bulk_modulus": "GPa",
    }
    assert schema.parse_property_specs("band_gap") == {"band_gap": "eV"}  # a built-in one
    with pytest.raises(ValueError, match="needs a unit"):
        schema.parse_property_specs("density")
    with pytest.raises(ValueError, match="twice"):
        schema.parse_property_specs("density:g/cm3,density:g/cm3")


def test_preprocess_keeps_the_named_columns_with_their_units(clean_vocabulary, density_csv, tmp_path, capsys):
    path, frame = density_csv
    cache = tmp_path / "cache"
    args = ["preprocess", str(path), "--cache-dir", str(cache), "--workers", "1", "-q"]
    assert data_main([*args, "--properties", "density:g/cm3"]) == 0
    assert "12 crystal(s) symmetrized, 0 failed" in capsys.readouterr().out
    dataset, failures = preprocess_file(
        path, cache_dir=cache, workers=1, progress=False, properties=["density"]
    )
    assert not failures and len(dataset) == 12
    assert dataset.property_names == ("density",)
    # the symmetrized cells hold the same mass per volume as the source CIFs (pymatgen, independently)
    assert dataset.property("density") == pytest.approx(frame["density"].to_numpy(), rel=1e-9)
    rebuilt = [dataset[i].structure().density for i in range(len(dataset))]
    assert rebuilt == pytest.approx(frame["density"].to_numpy(), rel=1e-3)
    record = dataset[0].to_record()
    assert [p.to_dict() for p in record.properties] == [
        {"name": "density", "value": pytest.approx(frame["density"][0]), "unit": "g/cm3"}
    ]
    # the cache round trip keeps the columns
    assert CrystalDataset.load(next(cache.glob("own.csv.*.npz"))).property_names == ("density",)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("densty:g/cm3", "no column 'densty' (property columns: density, label)"),
        ("label:a.u.", "column 'label' holds values that are not numbers"),
        ("density", "property 'density' needs a unit"),
        ("Density:g/cm3", "must be lower case"),
    ],
)
def test_bad_property_columns_are_one_line_errors(
    clean_vocabulary, density_csv, tmp_path, capsys, spec, message
):
    path, _ = density_csv
    code = data_main(
        ["preprocess", str(path), "--cache-dir", str(tmp_path / "c"), "-q", "--properties", spec]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "c").exists() or not list((tmp_path / "c").iterdir())


def test_a_model_config_registers_its_units_and_refuses_a_property_without_one(clean_vocabulary):
    register_properties(ModelConfig(properties=("band_gap",)))  # built in: no unit needed
    with pytest.raises(ValueError, match="give its unit in model.property_units"):
        register_properties(ModelConfig(properties=("density",), property_ranges=((0.0, 12.0),)))
    with pytest.raises(ValueError, match="1 unit"):
        register_properties(ModelConfig(properties=("density", "band_gap"), property_units=("g/cm3",)))
    register_properties(ModelConfig(properties=("density",), property_units=("g/cm3",)))
    assert schema.KNOWN_PROPERTY_UNITS["density"] == "g/cm3"


def test_trainer_overrides_parse_as_the_field_types():
    config = load_config(REPO / "configs" / "dit_own_property.py")
    assert config.model.properties == ("density",) and config.model.property_units == ("g/cm3",)
    changed = config
    for item in (
        "model.properties=bulk_modulus",
        "model.property_units=GPa",
        "model.property_ranges=0:400",
        "model.hidden=64",
        "learning_rate=1e-4",
        "train_split=data/moduli.csv",
        "train_limit=100",
        "init_from=none",
    ):
        changed = override(changed, item)
    assert changed.model == dataclasses.replace(
        config.model,
        properties=("bulk_modulus",),
        property_units=("GPa",),
        property_ranges=((0.0, 400.0),),
        hidden=64,
    )
    assert (changed.learning_rate, changed.train_split, changed.train_limit, changed.init_from) == (
        1e-4,
        "data/moduli.csv",
        100,
        None,
    )
    for bad, message in (("model.hiden=64", "no such config field"), ("model.hidden=wide", "expected int")):
        with pytest.raises(ValueError, match=message):
            override(config, bad)


def test_a_target_of_an_unknown_property_is_a_one_line_error():
    from unimdm_jax.generation import GenerationError, generate

    with pytest.raises(GenerationError, match="unknown property 'density'.*--dit-checkpoint"):
        generate(symmetry=record_with("band_gap", 1.0, "eV"), properties={"density": 2.2}, progress=False)


def test_the_own_property_configs_load():
    from llm_torch.finetune import load_config as load_llm_config

    llm = load_llm_config(REPO / "configs" / "llm_own_property.py", ["property_unit=g/cm3"])
    assert (llm.property_name, llm.property_unit, llm.train_csv) == ("density", "g/cm3", "my_train.csv")
    card = json.loads((REPO / "unimdm_jax" / "checkpoints" / "dit_mp20_cpu" / "config.json").read_text())
    # the warm start needs the shipped model's parameter shapes: same network, one property input
    own = load_config(REPO / "configs" / "dit_own_property.py").model
    shipped = card["model"]
    assert (
        shipped["hidden"],
        shipped["num_layers"],
        shipped["num_frequencies"],
        len(shipped["properties"]),
    ) == (own.hidden, own.num_layers, own.num_frequencies, len(own.properties))


def test_a_targets_file_may_name_a_property_of_your_own(tmp_path):
    from unimdm_jax.screening import read_targets

    path = tmp_path / "targets.csv"
    path.write_text("formula,density,band_gap\nNaCl,2.2,\nKCl,1.8:2.0,\nLiF,,3.0\n")
    rows = read_targets(path, own_properties=["density"])
    assert [(r.formula, r.targets, r.error) for r in rows] == [
        ("NaCl", {"density": "2.2"}, None),
        ("KCl", {"density": "1.8:2.0"}, None),
        ("LiF", {"band_gap": "3.0"}, None),
    ]
    plain = read_targets(path)  # without a model trained on density, the column is not a target
    assert [r.targets for r in plain] == [{}, {}, {"band_gap": "3.0"}]
    assert plain[0].error == "give exactly one target per row: band_gap or formation_energy"
