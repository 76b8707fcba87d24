"""Symmetry predictor (stage 1): a causal LM that writes the JSON symmetry schema."""
