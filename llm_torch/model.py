"""Models: a small GLM-4 for training from scratch, and loading any causal LM (+ LoRA adapters).

``small_glm4_config`` sizes a transformers ``Glm4Config`` for the trained ~3k-token vocabulary
(hidden 256, 4 layers, 4 heads, MLP 688: about 4.8 M parameters, ~19 MB as float32
safetensors). ``load_causal_lm`` loads any ``AutoModelForCausalLM`` (hub id or folder) on
``auto``/``cuda``/``npu``/``cpu``; ``load_for_inference`` also understands folders written by
``llm_torch.finetune`` (full weights or a peft adapter).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, Glm4Config, Glm4ForCausalLM

from .tokenizer import load_tokenizer

# on use: torch_npu (the npu extra, Ascend only) and peft (LoRA adapters only)

__all__ = [
    "load_causal_lm",
    "load_for_inference",
    "parameter_count",
    "resolve_device",
    "resolve_dtype",
    "small_glm4",
    "small_glm4_config",
]


def small_glm4_config(
    vocab_size: int,
    *,
    hidden_size: int = 256,
    num_layers: int = 4,
    num_heads: int = 4,
    num_kv_heads: int | None = None,
    intermediate_size: int = 688,
    max_position_embeddings: int = 2048,
    pad_token_id: int = 0,
    eos_token_id: int = 1,
    tie_word_embeddings: bool = False,
):
    """A small ``Glm4Config`` (defaults: ~4.8 M parameters with a 3,072-token vocabulary)."""

    if hidden_size % num_heads:
        raise ValueError(f"hidden_size {hidden_size} must be divisible by num_heads {num_heads}")
    return Glm4Config(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads or num_heads,
        head_dim=hidden_size // num_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings,
        pad_token_id=pad_token_id,
        eos_token_id=eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=tie_word_embeddings,
        rms_norm_eps=1e-5,
    )


def small_glm4(vocab_size: int, seed: int | None = 0, **kwargs):
    """A randomly initialised ``Glm4ForCausalLM`` of :func:`small_glm4_config`."""

    if seed is not None:
        torch.manual_seed(seed)
    return Glm4ForCausalLM(small_glm4_config(vocab_size, **kwargs))


def parameter_count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def resolve_device(name: str = "auto"):
    """``torch.device`` for ``auto`` (cuda, else cpu), ``cuda``, ``npu`` (Ascend) or ``cpu``.

    ``npu`` imports ``torch_npu`` only when asked; a missing package or device is a one-line
    ``RuntimeError``.
    """

    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' requested but torch sees no CUDA GPU")
        return torch.device(name)
    if name.startswith("npu"):
        try:
            import torch_npu  # noqa: F401 - registers the npu device with torch
        except ImportError:
            raise RuntimeError(
                "device 'npu' needs the torch_npu package (Ascend CANN + `pip install torch-npu`), "
                "which is not installed"
            ) from None
        if not torch.npu.is_available():  # type: ignore[attr-defined]
            raise RuntimeError("device 'npu' requested but torch_npu sees no Ascend NPU")
        return torch.device(name)
    raise RuntimeError(f"unknown device {name!r} (use auto, cuda, npu or cpu)")


def resolve_dtype(name: str | None, device=None):
    """``torch.dtype`` from ``auto`` (bfloat16 on accelerators, float32 on CPU), ``bf16``/``bfloat16``,
    ``fp16``/``float16`` or ``fp32``/``float32``."""

    name = (name or "auto").lower()
    if name == "auto":
        return torch.float32 if device is None or getattr(device, "type", "cpu") == "cpu" else torch.bfloat16
    table = {
        "bf16": torch.bfloat16,
        "bfloat16": torch.bfloat16,
        "fp16": torch.float16,
        "float16": torch.float16,
        "fp32": torch.float32,
        "float32": torch.float32,
    }
    if name not in table:
        raise ValueError(f"unknown dtype {name!r} (use auto, bf16, fp16 or fp32)")
    return table[name]


def load_causal_lm(
    path_or_id: str, device: str = "auto", dtype: str = "auto", trust_remote_code: bool = False
):
    """Any ``AutoModelForCausalLM`` (hub id or local folder) on ``device``, in eval mode.

    ``trust_remote_code`` stays False unless asked: GLM-4 is native in transformers
    (``THUDM/glm-4-9b-hf``-style repositories); the older ``THUDM/glm-4-9b`` needs it.
    """

    dev = resolve_device(device)
    model = AutoModelForCausalLM.from_pretrained(
        str(path_or_id), dtype=resolve_dtype(dtype, dev), trust_remote_code=trust_remote_code
    )
    return model.to(dev).eval()


def load_for_inference(
    model_dir: str | Path, device: str = "auto", dtype: str = "auto", trust_remote_code: bool = False
):
    """(model, tokenizer, model card dict) of a folder written by ``llm_torch.finetune``.

    A folder with ``adapter_config.json`` is a peft LoRA adapter: its base model (from the
    model card or the adapter config) is loaded and the adapter applied.
    """

    model_dir = Path(model_dir)
    card_path = model_dir / "model_card.json"
    card = json.loads(card_path.read_text()) if card_path.exists() else {}
    tokenizer = load_tokenizer(model_dir, trust_remote_code=trust_remote_code)
    if (model_dir / "adapter_config.json").exists():
        from peft import PeftModel  # on use: only LoRA adapter folders need peft

        adapter = json.loads((model_dir / "adapter_config.json").read_text())
        base_id = card.get("base_model") or adapter.get("base_model_name_or_path")
        base = load_causal_lm(base_id, device, dtype, trust_remote_code)
        model = PeftModel.from_pretrained(base, str(model_dir)).to(base.device).eval()
    else:
        model = load_causal_lm(str(model_dir), device, dtype, trust_remote_code)
    return model, tokenizer, card
