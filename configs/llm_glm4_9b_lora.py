"""Symmetry predictor as LoRA on GLM-4-9B (band gap), the paper-style setting. Needs a GPU/NPU.

Run (one CUDA GPU, >= 40 GB; bf16 + gradient checkpointing):
    python -m llm_torch.finetune --config configs/llm_glm4_9b_lora.py --set device=cuda
Multi-GPU (data parallel; batches are sharded by process):
    accelerate launch --num_processes 8 -m llm_torch.finetune --config configs/llm_glm4_9b_lora.py
    torchrun --nproc_per_node 8 -m llm_torch.finetune --config configs/llm_glm4_9b_lora.py
Ascend NPU (CANN toolkit + `pip install torch-npu`; torch_npu is imported only for device=npu):
    python -m llm_torch.finetune --config configs/llm_glm4_9b_lora.py --set device=npu
    accelerate launch --num_processes 8 -m llm_torch.finetune --config configs/llm_glm4_9b_lora.py \\
        --set device=npu
Formation energy instead of band gap: --set property_name=formation_energy_per_atom
    --set output_dir=workdirs/llm_glm4_9b_lora_fm
A local copy of the weights works too: --set base_model=/models/glm-4-9b-hf

Model: `THUDM/glm-4-9b-hf` (transformers-native GLM-4, `Glm4ForCausalLM`, no trust_remote_code;
       the chat variant `THUDM/glm-4-9b-chat-hf` works the same and uses its chat template).
       LoRA rank 8, alpha 32, dropout 0.05 on the attention projections q_proj, k_proj, v_proj,
       o_proj (the module names of transformers' Glm4Attention), ~4 M trainable parameters.
Data:  MP-20 policy split `train` (28,218 crystals), composition mode mixed; model selection on
       `holdout`; test untouched. Loss on the answer tokens only.
Time:  ~3 epochs x 28k examples x ~350 tokens = ~30 M tokens; about 1-1.5 h per epoch on one
       H100 (bf16, gradient checkpointing), proportionally less with data parallelism. CPU is not
       an option (18 GB of bf16 weights, days per epoch).
Output: adapter_model.safetensors + adapter_config.json + tokenizer + model_card.json in
       workdirs/llm_glm4_9b_lora/final; predict with --model workdirs/llm_glm4_9b_lora/final --device cuda.
"""

from llm_torch.finetune import FinetuneConfig


def get_config() -> FinetuneConfig:
    return FinetuneConfig(
        name="glm4_9b_lora_bg",
        mode="lora",
        base_model="THUDM/glm-4-9b-hf",
        trust_remote_code=False,
        output_dir="workdirs/llm_glm4_9b_lora",
        property_name="band_gap",
        composition_mode="mixed",
        train_split="train",
        eval_split="holdout",
        limit_eval=256,
        prompt_style="auto",
        epochs=3.0,
        batch_size=4,
        grad_accum=4,
        learning_rate=1e-4,
        warmup_steps=100,
        lr_schedule="cosine",
        max_length=1024,
        dtype="bf16",
        gradient_checkpointing=True,
        device="auto",
        lora_r=8,
        lora_alpha=32,
        lora_dropout=0.05,
        lora_target_modules=("q_proj", "k_proj", "v_proj", "o_proj"),
        log_every=20,
        eval_every=500,
        save_every=500,
        eval_symmetry_limit=200,
    )
