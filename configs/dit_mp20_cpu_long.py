"""Crystal DiT, CPU-sized (the shipped network), band gap: long training in resumable segments.

Warm-starts from the shipped ``dit_mp20_cpu`` (45 epochs) and runs a new warmup + cosine
schedule over 60,000 steps of batch 64 (136 epochs), the budget-fair study's winner at the
CPU budgets measured (benchmarks/README.md, "Crystal DiT variants"). Each segment saves
``train_state.safetensors`` in its work dir every 500 steps; commit it (17.7 MB) at the end
of a segment and the next segment, on any machine, continues exactly where it stopped:

Run:   python -m unimdm_jax.train --config configs/dit_mp20_cpu_long.py --workdir workdirs/dit_mp20_cpu_long
Next:  python -m unimdm_jax.train --config configs/dit_mp20_cpu_long.py \\
           --workdir workdirs/dit_mp20_cpu_long \\
           --resume-from training_states/dit_mp20_cpu_long/train_state.safetensors
Time:  ~280 crystals/s (4.4 steps/s) alone on the 2-core development machine: about 3.8 hours
       for the whole schedule, i.e. two segments of under 2.5 hours.
"""

import dataclasses
from pathlib import Path

from unimdm_jax.config import load_config


def get_config():
    base = load_config(Path(__file__).with_name("dit_mp20_cpu.py"))
    return dataclasses.replace(
        base,
        init_from="unimdm_jax/checkpoints/dit_mp20_cpu",
        learning_rate=5e-4,
        warmup_steps=500,
        total_steps=60_000,
        checkpoint_every=500,
        eval_every=2_000,
    )
