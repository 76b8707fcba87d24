"""Symmetry predictor from scratch: a small GLM-4 (4.8 M parameters) conditioned on the band gap.

Run:   python -m llm_torch.finetune --config configs/llm_small_glm4_bg.py
       (add --set device=cuda on a GPU, --set num_threads=1 when sharing the CPU; the run resumes
       from workdirs/llm_small_glm4_bg/checkpoints)
Data:  instruction examples of the MP-20 training policy's `train` split (train_partial + val rows
       1,001-9,047, 28,218 crystals), composition mode mixed (cell counts / reduced formula by a
       hash of the material id); model selection on `holdout` (val rows 1-1,000); test untouched.
       Needs the symmetrized cache (UNIMDM_CACHE, `python -m unimdm_jax.data preprocess`).
Model: Glm4ForCausalLM, hidden 256, 4 layers, 4 heads, MLP 688, a 3,072-token byte-level BPE
       trained on the same examples; ~19 MB float32 safetensors. Exported to
       workdirs/export/small_glm4_bg_stage1, not over the embedded llm_torch/checkpoints/small_glm4_bg,
       which is this stage continued four times by configs/llm_small_glm4_bg_continue.py.
Time:  2,646 steps of 32 (3 epochs) on the 2-core development CPU: 1.8-1.9 s per step with the
       cores to itself (1 or 2 torch threads), up to 4.2 s per step while other jobs share them,
       i.e. 1.4-3 hours. On one GPU (bf16 autocast) a few minutes (estimated, not measured).
"""

from llm_torch.finetune import FinetuneConfig


def get_config() -> FinetuneConfig:
    return FinetuneConfig(
        name="small_glm4_bg",
        mode="scratch",
        output_dir="workdirs/llm_small_glm4_bg",
        export_dir="workdirs/export/small_glm4_bg_stage1",
        property_name="band_gap",
        composition_mode="mixed",
        train_split="train",
        eval_split="holdout",
        limit_eval=500,
        vocab_size=3072,
        model=dict(hidden_size=256, num_layers=4, num_heads=4, intermediate_size=688),
        epochs=3.0,
        batch_size=32,
        learning_rate=1e-3,
        weight_decay=0.01,
        warmup_steps=200,
        max_length=512,
        device="auto",
        log_every=50,
        eval_every=500,
        save_every=250,
        eval_symmetry_limit=200,
    )
