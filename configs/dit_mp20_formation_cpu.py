"""Crystal DiT, CPU-sized, conditioned on formation energy (the paper's FM variant).

Warm-started from the band-gap model (same architecture and parameter shapes): what it knows
about lattices and Wyckoff coordinates carries over, and the property embedding and the
attention paths that read it are retrained for formation energy (radial basis over
-5.5..0.5 eV/atom). Classifier-free dropout of the condition as in the band-gap model.

Run:   python -m unimdm_jax.train --config configs/dit_mp20_formation_cpu.py \\
           --workdir workdirs/dit_mp20_formation_cpu --init-from unimdm_jax/checkpoints/dit_mp20_cpu
       (or --init-from workdirs/dit_mp20_cpu after training configs/dit_mp20_cpu.py;
       --init-from none trains from scratch: use configs/dit_mp20_cpu.py's 20,000 steps then)
Time:  4,000 steps of batch 64: 57 min on the 2-core development CPU shared with other jobs
       (~75 crystals/s); about 17 minutes alone at ~250 crystals/s (estimated, not measured).
"""

import dataclasses
from pathlib import Path

from unimdm_jax.config import load_config


def _base_config():
    return load_config(Path(__file__).with_name("dit_mp20_cpu.py"))


def get_config():
    config = _base_config()
    model = dataclasses.replace(
        config.model, properties=("formation_energy_per_atom",), property_ranges=((-5.5, 0.5),)
    )
    return dataclasses.replace(
        config,
        model=model,
        init_from="workdirs/dit_mp20_cpu",
        learning_rate=4e-4,
        warmup_steps=200,
        total_steps=4_000,
    )
