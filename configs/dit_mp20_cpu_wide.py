"""Crystal DiT widened to hidden 256 (6 layers, 32 Fourier frequencies), grown from the shipped model.

The shipped 128-wide network (``unimdm_jax/checkpoints/dit_mp20_cpu``) had a flat holdout loss over the
last 12,000 steps of its cycle (0.3544-0.3558): capacity, not the schedule, limits it. This config
doubles its width with ``model/growth.py`` (every hidden unit split in two copies: step 0 computes the
shipped model's function; the copies' outgoing weights are split unevenly so training separates them)
and trains a new warmup + cosine schedule of 24,000 steps of batch 64 (54 epochs) in resumable segments.

Run:   python -m unimdm_jax.train --config configs/dit_mp20_cpu_wide.py --workdir workdirs/dit_mp20_cpu_wide
Next:  python -m unimdm_jax.train --config configs/dit_mp20_cpu_wide.py \\
           --workdir workdirs/dit_mp20_cpu_wide \\
           --resume-from training_states/dit_mp20_cpu_wide/train_state.safetensors
       (copy train_state.safetensors and the train_state.part*.safetensors files it names)
Time:  42-64 crystals/s (0.66-1 step/s) alone on the 2-core development CPU (two machines), about half
       that when another job shares the cores: 7-10 hours alone for the schedule. The segments run so
       far, the last train state and its EMA export: training_states/dit_mp20_cpu_wide/ (README there).
"""

import dataclasses
from pathlib import Path

from unimdm_jax.config import load_config


def get_config():
    base = load_config(Path(__file__).with_name("dit_mp20_cpu_grown.py"))
    return dataclasses.replace(
        base,
        model=dataclasses.replace(base.model, hidden=256),
        init_from="unimdm_jax/checkpoints/dit_mp20_cpu",
        init_grow=True,
        learning_rate=3e-4,
        warmup_steps=500,
        total_steps=24_000,
        checkpoint_every=500,
        eval_every=1_000,
    )
