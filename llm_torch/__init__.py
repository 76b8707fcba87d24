"""Symmetry predictor (stage 1): a causal LM that writes the JSON symmetry schema.

Pure-Python parts (no torch): :mod:`llm_torch.prompts`, :mod:`llm_torch.constraints`,
:mod:`llm_torch.atomic_facts`. Torch/transformers parts: :mod:`llm_torch.decoding`,
:mod:`llm_torch.model`, :mod:`llm_torch.tokenizer`, :mod:`llm_torch.finetune`,
:mod:`llm_torch.predict`, :mod:`llm_torch.evaluate` (CLIs import torch only when needed).
See ``llm_torch/README.md``.
"""
