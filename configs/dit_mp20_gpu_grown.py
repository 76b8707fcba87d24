"""Crystal DiT at the paper's width for the one-shot GPU run, grown from the shipped CPU model.

Eight GPU minutes cannot train the paper-sized network (``configs/dit_mp20_paper.py``) from scratch
to the shipped model's quality. This config starts there instead: the shipped band-gap model
(hidden 128, 6 layers, 32 frequencies) grown by ``model/growth.py`` to hidden 512 (two doublings,
same function at step 0) and 128 Fourier frequencies (1..128; the new ones start with zero weights),
then trained with batch 256 and a short EMA horizon, so whatever the budget allows adds to it.
Same heads (4) and one-layer messages as the shipped network (growth keeps those).

Run (GPU, one shot):  CONFIG=configs/dit_mp20_gpu_grown.py bash benchmarks/gpu_oneshot.sh
       (the shipped checkpoint travels with the working tree; see benchmarks/README.md)
Run (anywhere):       python -m unimdm_jax.train --config configs/dit_mp20_gpu_grown.py \\
                          --workdir workdirs/dit_mp20_gpu_grown
Time:  sized for a GPU; on the 2-core CPU a step of batch 256 takes many seconds.
"""

import dataclasses
from pathlib import Path

from unimdm_jax.config import load_config


def get_config():
    base = load_config(Path(__file__).with_name("dit_mp20_cpu_grown.py"))
    return dataclasses.replace(
        base,
        model=dataclasses.replace(base.model, hidden=512, num_frequencies=128),
        init_from="unimdm_jax/checkpoints/dit_mp20_cpu",
        init_grow=True,
        batch_size=256,
        learning_rate=3e-4,
        warmup_steps=200,
        total_steps=20_000,
        ema_decay=0.999,
        checkpoint_every=1_000,
        eval_every=1_000,
    )
