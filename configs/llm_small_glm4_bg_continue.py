"""Symmetry predictor, band gap: second to fifth stage of the embedded model.

Warm-starts every weight (and the tokenizer) from the previous stage's export and trains on every
training crystal in *both* composition modes (cell counts and reduced formula), with a short warm-up
and a cosine decay from a third of the first stage's peak learning rate.

Run:   python -m llm_torch.finetune --config configs/llm_small_glm4_bg.py                    # stage 1
       python -m llm_torch.finetune --config configs/llm_small_glm4_bg_continue.py \\
           --set num_threads=2                                                               # stage 2
       python -m llm_torch.finetune --config configs/llm_small_glm4_bg_continue.py --set num_threads=2 \\
           --set base_model=workdirs/export/small_glm4_bg_continue --set learning_rate=1.5e-4 --set seed=1 \\
           --set output_dir=workdirs/llm_small_glm4_bg_stage3 \\
           --set export_dir=workdirs/export/small_glm4_bg_stage3                             # stage 3
       python -m llm_torch.finetune --config configs/llm_small_glm4_bg_continue.py --set num_threads=1 \\
           --set base_model=workdirs/export/small_glm4_bg_stage3 --set learning_rate=1e-4 --set seed=2 \\
           --set output_dir=workdirs/llm_small_glm4_bg_stage4 \\
           --set export_dir=workdirs/export/small_glm4_bg_stage4                             # stage 4
       python -m llm_torch.finetune --config configs/llm_small_glm4_bg_continue.py --set device=cuda \\
           --set base_model=workdirs/export/small_glm4_bg_stage4 --set learning_rate=1.5e-4 --set seed=5 \\
           --set max_steps=3639 --set warmup_steps=100 --set eval_every=500 --set save_every=1000 \\
           --set output_dir=workdirs/llm_small_glm4_bg_stage5 \\
           --set export_dir=workdirs/export/small_glm4_bg_stage5         # stage 5 (the shipped model, GPU)
       (each stage resumes from its own output_dir; the defaults export to workdirs/, not over the shipped
       llm_torch/checkpoints/small_glm4_bg, the stage-5 export converted to float32)
Data:  as configs/llm_small_glm4_bg.py (policy split `train`, 28,218 crystals -> 56,436 examples;
       selection on `holdout`; test untouched).
Time:  stages 2-4, 1,200 steps of 32 each: 1.7 s per step on two threads of the 2-core development CPU
       with the cores to itself, 3.1 s per step on one thread beside another job (35-65 min). Stage 5,
       3,639 steps on one H100 (bf16 autocast): 159 s with three other runs of this size sharing the GPU
       (~3 h on one CPU thread). Per-stage times and holdout results: the model card's `history`.
"""

import dataclasses
from pathlib import Path

from llm_torch.finetune import load_config


def get_config():
    return dataclasses.replace(
        load_config(Path(__file__).with_name("llm_small_glm4_bg.py")),
        name="small_glm4_bg",
        mode="full",
        base_model="workdirs/export/small_glm4_bg_stage1",
        output_dir="workdirs/llm_small_glm4_bg_continue",
        export_dir="workdirs/export/small_glm4_bg_continue",
        composition_mode="both",
        max_steps=1200,
        learning_rate=3e-4,
        warmup_steps=50,
        eval_every=0,
        save_every=100,
        eval_symmetry_limit=0,
    )
