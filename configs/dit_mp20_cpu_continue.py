"""Crystal DiT, CPU-sized, band gap: second stage of the shipped checkpoint.

The first stage (configs/dit_mp20_cpu.py) was stopped at step 11,750 of its 20,000-step
schedule by a session time limit, and only its exported EMA weights survived. This stage
warm-starts from them (fresh AdamW state) and runs the rest of the decay: peak learning rate
4e-4 (what the first schedule had reached) and cosine decay over 4,000 steps.

Run:   python -m unimdm_jax.train --config configs/dit_mp20_cpu_continue.py \\
           --workdir workdirs/dit_mp20_cpu_continue --init-from workdirs/dit_mp20_cpu
       (--init-from takes a training work dir or an exported checkpoint folder)
Time:  measured 3,414 s (57 min) for the 4,000 steps on the 2-core development machine while
       another training run and evaluations shared the cores (~75 crystals/s); alone, expect about
       17 minutes at the ~250 crystals/s measured for configs/dit_mp20_cpu.py (not measured).
"""

import dataclasses
from pathlib import Path

from unimdm_jax.config import load_config


def _base_config():
    return load_config(Path(__file__).with_name("dit_mp20_cpu.py"))


def get_config():
    return dataclasses.replace(_base_config(), init_from="workdirs/dit_mp20_cpu", learning_rate=4e-4,
                               warmup_steps=200, total_steps=4_000)
