"""Crystal DiT, CPU-sized default (band-gap conditioned), trained on MP-20.

Run:   python -m unimdm_jax.train --config configs/dit_mp20_cpu.py --workdir workdirs/dit_mp20_cpu
Data:  the training policy's split (train_partial + val rows 1001..9047, 28,218 crystals),
       holdout = val rows 1..1000 for model selection; test is never touched.
Time:  about 80 minutes for 20,000 steps of batch 64 (45 epochs, ~280 crystals/s) on the
       2-core development machine
       (the run that produced the shipped checkpoint is described in its model card).
"""

from unimdm_jax.config import TrainConfig
from unimdm_jax.model import ModelConfig
from unimdm_jax.objective import DiffusionConfig


def get_config() -> TrainConfig:
    return TrainConfig(
        model=ModelConfig(
            hidden=128,
            num_layers=4,
            num_heads=4,
            num_frequencies=16,
            properties=("band_gap",),
            property_ranges=((0.0, 10.0),),
        ),
        diffusion=DiffusionConfig(timesteps=1000),
        batch_size=64,
        total_steps=20_000,
        learning_rate=1e-3,
        warmup_steps=300,
        ema_decay=0.999,
        log_every=25,
        checkpoint_every=250,
        eval_every=1000,
    )
