"""Symmetry predictor for a property of your own: the embedded band-gap model fine-tuned, every
weight, with your property in the prompt ("Target density: 2.165 g/cm3").

Your data: CDVAE-format CSV files with a numeric column named as the property (see
configs/dit_own_property.py); the crystals are symmetrized and cached on first use. The prompt
states the property by its name (``_`` read as a space), its unit and 3 decimals; the answer
format (space group, Wyckoff positions, assignment) is unchanged, so the band-gap model's
knowledge of symmetry carries over. Set the property, its unit and your files below or with --set:

Run:   python -m llm_torch.finetune --config configs/llm_own_property.py \\
           --set train_csv=my_train.csv --set eval_csv=my_val.csv \\
           --set property_name=density --set property_unit=g/cm3 --set export_dir=my_models/llm_density
Time:  ~1.8 s per step of 32 on the 2-core development CPU (the band-gap model's full fine-tuning
       rate): the 600 steps below in about 20 minutes; notebooks/05_your_own_data.ipynb runs 8
       steps of 8 on 160 crystals.
"""

import dataclasses
from pathlib import Path

from llm_torch.finetune import load_config


def get_config():
    return dataclasses.replace(
        load_config(Path(__file__).with_name("llm_small_glm4_bg.py")),
        name="llm_own_property",
        mode="full",
        base_model="llm_torch/checkpoints/small_glm4_bg",
        output_dir="workdirs/llm_own_property",
        export_dir="workdirs/export/llm_own_property",
        property_name="density",
        property_unit="g/cm3",
        train_split=None,
        eval_split=None,
        train_csv="my_train.csv",
        eval_csv="my_val.csv",
        composition_mode="both",
        max_steps=600,
        learning_rate=3e-4,
        warmup_steps=30,
        eval_every=0,
        save_every=100,
        eval_symmetry_limit=0,
    )
