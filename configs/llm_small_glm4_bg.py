"""Symmetry predictor from scratch: a small GLM-4 (4.8 M parameters) conditioned on the band gap.

Run:   python -m llm_torch.finetune --config configs/llm_small_glm4_bg.py
       (add --set device=cuda on a GPU; the run resumes from workdirs/llm_small_glm4_bg/checkpoints)
Data:  instruction examples of the MP-20 training policy's `train` split (train_partial + val rows
       1,001-9,047, 28,218 crystals), composition mode mixed (cell counts / reduced formula by a
       hash of the material id); model selection on `holdout` (val rows 1-1,000); test untouched.
       Needs the symmetrized cache (UNIMDM_CACHE, `python -m unimdm_jax.data preprocess`).
Stage: the first of five; the embedded model is this one continued four times by configs/llm_small_glm4_bg_continue.py
       (commands there), which reads this stage's export.
Model: Glm4ForCausalLM, hidden 256, 4 layers, 4 heads, MLP 688, a 3,072-token byte-level BPE
       trained on the same examples; ~19 MB float32 safetensors. Exported to
       workdirs/export/small_glm4_bg_stage1 (not over the embedded llm_torch/checkpoints/small_glm4_bg,
       the fifth stage's export).
Time:  ~167 tokens per example (prompt ~125, answer ~42 with the 3,072-token BPE); 882 steps of 32
       per epoch, 2,646 steps for 3 epochs. Measured on the 2-core development CPU with 1 torch thread:
       1.9 s per step once with one other job on the cores; 4.2 s per step over steps 501-1,600
       (4,638 s) while one or two JAX benchmarks shared them; with 2 torch threads and the cores
       to itself 1.83 s per step (steps 1,900-2,600: 1,280 s), but ~9 s per step while a JAX sampler
       shared them (run such jobs one after the other). I.e. 1.4-3 hours for 3 epochs (+ ~2 min for
       the holdout symmetry metrics). The shipped model ran the full 2,646 steps in six resumed
       segments over three sessions (10,919 s in all; its card lists them). Add --set num_threads=1
       when sharing the CPU. On one GPU
       (--set device=cuda, bf16 autocast) expect a few minutes (not measured; the model is tiny).
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
