"""Function-preserving growth of a trained Crystal DiT into a larger one (Net2Net-style).

A network with more layers and more Fourier frequencies (same hidden width, heads and
properties) is initialised so that it computes exactly the smaller network's function:

- every parameter the two networks share is copied;
- the message passing's Fourier projection (``from_fourier``) gets the old frequencies' rows
  at their new places and zero rows for the new frequencies (psi_FT of the new frequencies
  then adds nothing);
- each new layer keeps its random initialisation except its output projections, which are
  zero: the message-passing update (h + phi_h(...)), the attention's output and the DiT
  block's MLP are residual, so a new layer starts as the identity.

Training then continues from the smaller network's quality instead of from scratch, with
the extra capacity available (a CPU budget cannot train the larger network from scratch).
"""

from __future__ import annotations

import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from unimdm_jax.model.crystal_dit import ModelConfig

# the output projections of a layer, zeroed when the layer is new: the outer Dense of phi_h
# in CrystalMessagePassing, the attention's output and the outer Dense of the MLP in
# CrystalDiTBlock (flax names nested Dense(Dense(x)) calls outer first: Dense_0)
_NEW_LAYER_OUTPUTS = {
    "message_passing": (("Dense_0",),),
    "dit_block": (("MultiHeadDotProductAttention_0", "out"), ("Dense_0",)),
}


def check_growable(small: ModelConfig, large: ModelConfig) -> None:
    """Raise ValueError unless ``large`` only adds layers and Fourier frequencies to ``small``."""
    same = (
        "hidden",
        "num_heads",
        "message_layers",
        "first_frequency",
        "attention",
        "properties",
        "property_ranges",
    )
    differ = [name for name in same if getattr(small, name) != getattr(large, name)]
    if differ:
        raise ValueError(
            f"cannot grow: the networks differ in {', '.join(differ)} (only layers and frequencies may grow)"
        )
    if large.num_layers < small.num_layers or large.num_frequencies < small.num_frequencies:
        raise ValueError("cannot grow: the new network has fewer layers or frequencies")


def fourier_rows(small_frequencies: int, large_frequencies: int) -> np.ndarray:
    """Row of the larger ``from_fourier`` kernel for each row of the smaller one.

    ``embeddings.fourier_features`` lays its output out as (coordinate, sin|cos, frequency),
    flattened; the same (coordinate, function, frequency) keeps its meaning when more
    frequencies follow."""
    coordinate, function, frequency = np.meshgrid(
        np.arange(3), np.arange(2), np.arange(small_frequencies), indexing="ij"
    )
    return (coordinate * 2 * large_frequencies + function * large_frequencies + frequency).reshape(-1)


def grow_params(small_params, small: ModelConfig, large_init_params, large: ModelConfig):
    """Parameters of the ``large`` network computing the ``small`` network's function.

    small_params / large_init_params: the ``params`` trees (without the ``{"params": ...}``
    wrapper); large_init_params is a fresh initialisation of the large network, whose new
    layers keep their random inner weights. Returns numpy arrays in large_init_params' tree."""
    check_growable(small, large)
    old = {key: np.asarray(value) for key, value in flatten_dict(small_params).items()}
    grown = {}
    for key, value in flatten_dict(large_init_params).items():
        value = np.asarray(value)
        if key in old and old[key].shape == value.shape:
            grown[key] = old[key].astype(value.dtype)
        elif key in old and key[-2:] == ("from_fourier", "kernel"):
            kernel = np.zeros_like(value)
            kernel[fourier_rows(small.num_frequencies, large.num_frequencies)] = old[key]
            grown[key] = kernel
        elif key in old:
            raise ValueError(f"cannot grow {'/'.join(key)}: shape {old[key].shape} -> {value.shape}")
        else:
            layer = key[0].rsplit("_", 1)
            if len(layer) != 2 or layer[0] not in _NEW_LAYER_OUTPUTS or int(layer[1]) < small.num_layers:
                raise ValueError(f"cannot grow: {'/'.join(key)} is new but not part of a new layer")
            outputs = _NEW_LAYER_OUTPUTS[layer[0]]
            zero = any(key[1 : 1 + len(path)] == path for path in outputs)
            grown[key] = np.zeros_like(value) if zero else value
    missing = set(old) - set(flatten_dict(large_init_params))
    if missing:
        raise ValueError(f"cannot grow: {'/'.join(sorted(missing)[0])} has no place in the new network")
    return unflatten_dict(grown)
