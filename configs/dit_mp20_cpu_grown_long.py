"""Crystal DiT, 6 layers and 32 Fourier frequencies (the grown network): long training in resumable segments.

Starts from the grown network's EMA export (``training_states/dit_mp20_cpu_grown/ema``: the long-trained
4-layer model grown by ``model/growth.py`` and trained 10,000 steps) with a new warmup + cosine schedule
over 30,000 steps of batch 64 (68 epochs). Its train state (26.7 MB) is written as two files under the
25 MB rule (``checkpoint.save_train_state``): commit both at the end of a segment and the next segment,
on any machine, continues exactly where it stopped:

Run:   python -m unimdm_jax.train --config configs/dit_mp20_cpu_grown_long.py \\
           --workdir workdirs/dit_mp20_cpu_grown_long
Next:  python -m unimdm_jax.train --config configs/dit_mp20_cpu_grown_long.py \\
           --workdir workdirs/dit_mp20_cpu_grown_long \\
           --resume-from training_states/dit_mp20_cpu_grown_long/train_state.safetensors
       (copy train_state.safetensors and the train_state.part*.safetensors file it names)
Time:  ~145 crystals/s (2.3 steps/s) alone on the 2-core development CPU: about 3.6 hours for the
       schedule, i.e. two segments of under 2.5 hours.
"""

import dataclasses
from pathlib import Path

from unimdm_jax.config import load_config


def get_config():
    base = load_config(Path(__file__).with_name("dit_mp20_cpu_grown.py"))
    return dataclasses.replace(
        base,
        init_from="training_states/dit_mp20_cpu_grown/ema",
        init_grow=False,
        learning_rate=3e-4,
        warmup_steps=300,
        total_steps=30_000,
        checkpoint_every=500,
        eval_every=2_000,
    )
