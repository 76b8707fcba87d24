"""Crystal DiT at the reference (DiffCSP++/Uni-MDM) size: 6 layers, 512 hidden, T=1000,
batch 256, band-gap conditioned, trained on MP-20.

Run:   python -m unimdm_jax.train --config configs/dit_mp20_paper.py --workdir workdirs/dit_mp20_paper
Data:  the training policy's split (28,218 crystals); holdout for model selection.
Time:  sized for a GPU (1,000 epochs ~ 110k steps); not practical on the 2-core CPU machine.
       Data parallel over all local devices (batch split evenly, gradients averaged).
"""

from unimdm_jax.config import TrainConfig
from unimdm_jax.model import ModelConfig
from unimdm_jax.objective import DiffusionConfig


def get_config() -> TrainConfig:
    return TrainConfig(
        model=ModelConfig(
            hidden=512,
            num_layers=6,
            num_heads=8,
            num_frequencies=128,
            properties=("band_gap",),
            property_ranges=((0.0, 10.0),),
        ),
        diffusion=DiffusionConfig(timesteps=1000),
        batch_size=256,
        total_steps=110_000,
        learning_rate=1e-3,
        warmup_steps=1_000,
        ema_decay=0.9999,
        log_every=100,
        checkpoint_every=2_000,
        eval_every=5_000,
    )
