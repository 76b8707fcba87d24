"""Symmetry predictor for formation-energy targets (the paper's FM variant): a band-gap model (same
small GLM-4 and tokenizer) fine-tuned, every weight, on the same crystals in both composition modes
with the formation energy per atom in the prompt instead of the band gap.

Run:   python -m llm_torch.finetune --config configs/llm_small_glm4_fm.py --set num_threads=2
       (from the embedded band-gap model llm_torch/checkpoints/small_glm4_bg; add --set device=cuda on a
       GPU; the run resumes from output_dir/checkpoints; for a from-scratch FM model use
       configs/llm_small_glm4_bg.py with --set property_name=formation_energy_per_atom --set output_dir=...
       --set export_dir=...)
       The shipped model was made in two steps from the fourth band-gap stage (workdirs/export/
       small_glm4_bg_stage4, the stage-4 command of configs/llm_small_glm4_bg_continue.py):
       python -m llm_torch.finetune --config configs/llm_small_glm4_fm.py --set num_threads=1 \\
           --set base_model=workdirs/export/small_glm4_bg_stage4 \\
           --set output_dir=workdirs/llm_small_glm4_fm_v5 \\
           --set export_dir=workdirs/export/small_glm4_fm_v5                                 # v5, CPU
       python -m llm_torch.finetune --config configs/llm_small_glm4_fm.py --set device=cuda \\
           --set base_model=workdirs/export/small_glm4_fm_v5 --set learning_rate=1.5e-4 --set seed=5 \\
           --set max_steps=3639 --set warmup_steps=100 --set eval_every=500 --set save_every=1000 \\
           --set output_dir=workdirs/llm_small_glm4_fm_stage2 \\
           --set export_dir=workdirs/export/small_glm4_fm_stage2                             # shipped, GPU
       (the card's `command` is the GPU run as it ran; `command_equivalent` is the line above)
Data:  as configs/llm_small_glm4_bg.py (policy split `train`, 28,218 crystals -> 56,436 examples in
       both modes; selection on `holdout`, test untouched).
Time:  600 steps of 32: ~34 min on one torch thread of the 2-core development CPU. 3,639 steps of 32
       on one H100 (bf16 autocast): 161 s with three other runs sharing the GPU. Holdout results of
       both steps: the model card's `selection` and `history`.
"""

import dataclasses
from pathlib import Path

from llm_torch.finetune import load_config


def get_config():
    return dataclasses.replace(
        load_config(Path(__file__).with_name("llm_small_glm4_bg.py")),
        name="small_glm4_fm",
        mode="full",
        base_model="llm_torch/checkpoints/small_glm4_bg",
        output_dir="workdirs/llm_small_glm4_fm",
        # never over the shipped llm_torch/checkpoints/small_glm4_fm
        export_dir="workdirs/export/small_glm4_fm",
        property_name="formation_energy_per_atom",
        composition_mode="both",
        max_steps=600,
        learning_rate=3e-4,
        warmup_steps=30,
        eval_every=0,
        save_every=50,
        eval_symmetry_limit=0,
    )
