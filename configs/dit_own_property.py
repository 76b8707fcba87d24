"""Crystal DiT conditioned on a property of your own, warm-started from the shipped band-gap model.

Your data: CDVAE-format CSV files (columns ``material_id``, ``cif`` and one numeric column per
property; ``python -m unimdm_jax.data preprocess my_train.csv --properties density:g/cm3`` checks
and caches them, training does it too). The shipped ``dit_mp20_cpu`` has one property input of
the same shape, so everything it learned about lattices and Wyckoff coordinates carries over and
the property embedding and the attention that reads it learn the new property (as the
formation-energy model was made from the band-gap one). Set the property, its unit, the range its
radial basis covers (a little wider than your data's) and your files below, or with ``--set``:

Run:   python -m unimdm_jax.train --config configs/dit_own_property.py --workdir workdirs/dit_density \\
           --set train_split=my_train.csv --set eval_split=my_val.csv \\
           --set model.properties=density --set model.property_units=g/cm3 \\
           --set model.property_ranges=0:12
       python -m unimdm_jax.checkpoint export --workdir workdirs/dit_density --out my_models/dit_density
Use:   python -m unimdm_jax.sample --formula NaCl --target density=2.2 \\
           --dit-checkpoint my_models/dit_density --symmetry-model my_models/llm_density --out out/
       (the symmetry model: configs/llm_own_property.py; or --symmetry FILE.json instead)
Time:  ~145 crystals/s on the 2-core development CPU (2.3 steps/s of batch 64, the shipped 6-layer
       network): 4,000 steps in about 30 minutes alone; notebooks/05_your_own_data.ipynb runs 20 steps
       of it on 160 crystals.
"""

import dataclasses
from pathlib import Path

from unimdm_jax.config import load_config

PROPERTY = "density"
UNIT = "g/cm3"
RANGE = (0.0, 12.0)
TRAIN_CSV = "my_train.csv"
EVAL_CSV = "my_val.csv"


def get_config():
    base = load_config(Path(__file__).with_name("dit_mp20_cpu_grown.py"))
    model = dataclasses.replace(
        base.model, properties=(PROPERTY,), property_units=(UNIT,), property_ranges=(RANGE,)
    )
    return dataclasses.replace(
        base,
        model=model,
        train_split=TRAIN_CSV,
        eval_split=EVAL_CSV,
        init_from="unimdm_jax/checkpoints/dit_mp20_cpu",
        init_grow=False,
        learning_rate=4e-4,
        warmup_steps=200,
        total_steps=4_000,
        eval_every=500,
    )
