"""Crystal DiT, CPU-sized, band gap: second stage of the shipped checkpoint.

Warm-starts from the exported EMA weights of a configs/dit_mp20_cpu.py run (fresh AdamW state) and
runs a cosine decay from peak learning rate 4e-4 over 4,000 steps. The shipped model's lineage
(its first stage stopped at step 11,750 of 20,000) is in its model card.

Run:   python -m unimdm_jax.train --config configs/dit_mp20_cpu_continue.py \\
           --workdir workdirs/dit_mp20_cpu_continue --init-from workdirs/dit_mp20_cpu
       (--init-from takes a training work dir or an exported checkpoint folder)
Time:  4,000 steps of batch 64: 57 min on the 2-core development CPU shared with other jobs
       (~75 crystals/s); about 17 minutes alone at ~250 crystals/s (estimated, not measured).
"""

import dataclasses
from pathlib import Path

from unimdm_jax.config import load_config


def _base_config():
    return load_config(Path(__file__).with_name("dit_mp20_cpu.py"))


def get_config():
    return dataclasses.replace(
        _base_config(),
        init_from="workdirs/dit_mp20_cpu",
        learning_rate=4e-4,
        warmup_steps=200,
        total_steps=4_000,
    )
