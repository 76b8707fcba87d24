"""Crystal DiT grown from the long-trained CPU model: 6 layers and 32 Fourier frequencies.

The long-trained 4-layer, 16-frequency network (``training_states/dit_mp20_cpu_long/ema``)
had a flat holdout loss over its last 10,000 steps (0.3687 -> 0.3663): the network, not the
schedule, limits it. This config grows it (``model/growth.py``: the new layers start as the
identity, the new frequencies with zero weights, so step 0 computes the old function) and
trains on with a new warmup + cosine schedule. More frequencies follow the budget-fair
study's candidate (c), which had a lower RMSE than the shipped network at equal budget.

Run:   python -m unimdm_jax.train --config configs/dit_mp20_cpu_grown.py --workdir workdirs/dit_mp20_cpu_grown
Time:  ~145 crystals/s (2.3 steps/s) alone on the 2-core development CPU: about 75 minutes for the
       10,000 steps (6,047 s of wall time in the recorded run, partly shared with the test suite).
       Only the EMA export is committed (training_states/dit_mp20_cpu_grown/ema); the next cycle,
       configs/dit_mp20_cpu_grown_long.py, warm-starts from it.
"""

import dataclasses
from pathlib import Path

from unimdm_jax.config import load_config


def get_config():
    base = load_config(Path(__file__).with_name("dit_mp20_cpu.py"))
    return dataclasses.replace(
        base,
        model=dataclasses.replace(base.model, num_layers=6, num_frequencies=32),
        init_from="training_states/dit_mp20_cpu_long/ema",
        init_grow=True,
        learning_rate=3e-4,
        warmup_steps=300,
        total_steps=10_000,
        checkpoint_every=500,
        eval_every=2_000,
    )
