"""Crystal DiT, CPU-sized, conditioned on formation energy (the paper's FM variant).

Warm-started from the shipped band-gap model (the grown network of ``configs/dit_mp20_cpu_grown.py``:
6 layers, 32 Fourier frequencies; same parameter shapes): what it knows about lattices and Wyckoff
coordinates carries over, and the property embedding and the attention paths that read it are
retrained for formation energy (radial basis over -5.5..0.5 eV/atom). Classifier-free dropout of
the condition as in the band-gap model.

Run:   python -m unimdm_jax.train --config configs/dit_mp20_formation_cpu.py \\
           --workdir workdirs/dit_mp20_formation_cpu
       python -m unimdm_jax.checkpoint export --workdir workdirs/dit_mp20_formation_cpu \\
           --out unimdm_jax/checkpoints/dit_mp20_formation_cpu
       (--init-from DIR warm-starts from another band-gap model of the same network)
Note:  the shipped ``dit_mp20_formation_cpu`` is this run (holdout rows 1-200, T=250: 0.725 / RMSE 0.066;
       benchmarks/README.md).
Time:  4,000 steps of batch 64: 2,314 s of wall time on the 2-core development CPU (122.5 crystals/s,
       partly shared with another job; ~145 crystals/s alone).
"""

import dataclasses
from pathlib import Path

from unimdm_jax.config import load_config


def get_config():
    base = load_config(Path(__file__).with_name("dit_mp20_cpu_grown.py"))
    model = dataclasses.replace(
        base.model, properties=("formation_energy_per_atom",), property_ranges=((-5.5, 0.5),)
    )
    return dataclasses.replace(
        base,
        model=model,
        init_from="unimdm_jax/checkpoints/dit_mp20_cpu",
        init_grow=False,
        learning_rate=4e-4,
        warmup_steps=200,
        total_steps=4_000,
        checkpoint_every=500,
        eval_every=1_000,
    )
