"""Function-preserving growth of a trained Crystal DiT into a larger one (Net2Net-style).

A network with more layers, more Fourier frequencies and/or twice the hidden width (same heads
and properties) is initialised so that it computes exactly the smaller network's function:

- every parameter the two networks share is copied;
- the message passing's Fourier projection (``from_fourier``) gets the old frequencies' rows
  at their new places and zero rows for the new frequencies (psi_FT of the new frequencies
  then adds nothing);
- each new layer keeps its random initialisation except its output projections, which are
  zero: the message-passing update (h + phi_h(...)), the attention's output and the DiT
  block's MLP are residual, so a new layer starts as the identity;
- doubling the width (Net2WiderNet, Chen et al. 2016) splits every hidden unit into two
  copies: a layer's outputs are duplicated and the next layer's weights on the two copies
  sum to the old weight. Duplicated vectors have the old mean and variance, so the layer
  norms are unchanged; the attention's query is scaled by 1/sqrt(2) because each head's
  dot product now sums twice the terms under a 1/sqrt(2 d) temperature; the time
  embedding's sinusoids of the wider network contain the old ones at even indices. The two
  copies' shares are random (r and 1 - r, r in [0.25, 0.75]; the query copies 1 +- e):
  with equal shares the copies would receive equal gradients and stay copies forever.

Training then continues from the smaller network's quality instead of from scratch, with
the extra capacity available (a CPU budget cannot train the larger network from scratch).
"""

from __future__ import annotations

import dataclasses

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
    """Raise ValueError unless ``large`` only adds layers and Fourier frequencies to ``small``
    and keeps its hidden width or doubles it (once or more)."""
    factor = large.hidden // small.hidden
    if factor < 1 or large.hidden % small.hidden or factor & (factor - 1):
        raise ValueError(
            f"cannot grow: hidden {small.hidden} -> {large.hidden}"
            " (the width can only stay or double, repeatedly)"
        )
    same = (
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
            f"cannot grow: the networks differ in {', '.join(differ)}"
            " (only layers, frequencies and the width may grow)"
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


def grow_params(small_params, small: ModelConfig, large_init_params, large: ModelConfig, seed: int = 0):
    """Parameters of the ``large`` network computing the ``small`` network's function.

    small_params / large_init_params: the ``params`` trees (without the ``{"params": ...}``
    wrapper); large_init_params is a fresh initialisation of the large network, whose new
    layers keep their random inner weights. ``seed`` draws the copies' shares when the width
    doubles. Returns numpy arrays in large_init_params' tree."""
    check_growable(small, large)
    while small.hidden < large.hidden:  # double the width until it fits (the seed differs per doubling)
        small_params = widen_params(small_params, small, seed)
        small = dataclasses.replace(small, hidden=2 * small.hidden)
        seed += 1
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


# Modules whose kernel input is not (only) the hidden vector: their input layout in blocks,
# ("hidden", n) split over the two copies of n units, ("fixed", n) kept as is
_FIXED_INPUT = {"from_fourier", "from_lattice", "wyckoff_op_embedding"}
_NORMS = {"final_norm", "context_norm", "query_norm"}
_HEADS = {"coord_head", "lattice_head"}  # outputs are the scores: not widened
_ATTENTION = {"query", "key", "value", "out"}


def _split_rows(kernel: np.ndarray, axis: int, rng) -> np.ndarray:
    """Each input unit i becomes units 2i and 2i+1 (which carry the same value) with shares
    r_i and 1 - r_i of its weights, so their sum is the old contribution."""
    share = rng.uniform(0.25, 0.75, kernel.shape[axis])
    shares = np.stack([share, 1.0 - share], axis=-1).reshape(-1)
    shape = [1] * kernel.ndim
    shape[axis] = shares.size
    return np.repeat(kernel, 2, axis=axis) * shares.reshape(shape)


def _input_blocks(key: tuple, kernel: np.ndarray, hidden: int) -> list[tuple[str, int]]:
    module = key[-2]
    rows = kernel.shape[0]
    if module in _FIXED_INPUT or (key[0].startswith("property_") and module == "Dense_1"):
        return [("fixed", rows)]
    if len(key) == 2 and module == "Dense_1":  # the time MLP's first layer reads the sinusoids
        return [("sinusoid", rows)]
    if len(key) == 2 and module == "Dense_2":  # the lattice MLP reads [crystal mean, k]
        return [("hidden", hidden), ("fixed", rows - hidden)]
    if key[0].startswith("message_passing_") and module == "Dense_1":  # phi_h reads [h, aggregated]
        return [("hidden", hidden), ("hidden", hidden)]
    return [("hidden", rows)]


def _widen_rows(kernel: np.ndarray, blocks, rng) -> np.ndarray:
    parts, start = [], 0
    for kind, size in blocks:
        block = kernel[start : start + size]
        start += size
        if kind == "fixed":
            parts.append(block)
        elif kind == "hidden":
            parts.append(_split_rows(block, 0, rng))
        else:  # sinusoid: sin(f_i) -> row 2i, cos(f_i) -> row size + 2i of the 2 * size rows
            half = size // 2
            rows = np.zeros((2 * size,) + block.shape[1:], block.dtype)
            rows[2 * np.arange(half)] = block[:half]
            rows[size + 2 * np.arange(half)] = block[half:]
            parts.append(rows)
    if start != kernel.shape[0]:
        raise ValueError(f"cannot widen: input layout of a kernel of shape {kernel.shape} is unknown")
    return np.concatenate(parts, axis=0)


def widen_params(params, config: ModelConfig, seed: int = 0):
    """Parameters of ``config`` with twice the hidden width computing the same function as
    ``params`` (``config``'s network). See the module docstring for the construction."""
    rng = np.random.default_rng(seed)
    hidden = config.hidden
    widened = {}
    for key, value in flatten_dict(params).items():
        value = np.asarray(value)
        dtype = value.dtype
        module, name = key[-2], key[-1]
        if module in _ATTENTION:  # kernels (D, heads, head_dim); the output's (heads, head_dim, D)
            if module == "out":
                if name == "kernel":
                    value = _split_rows(value, 1, rng)
                value = np.repeat(value, 2, axis=-1)
            else:
                if name == "kernel":
                    value = _split_rows(value, 0, rng)
                value = np.repeat(value, 2, axis=-1)
                if module == "query":  # 1/sqrt(2) for the doubled head dimension, shared 1 +- e
                    e = rng.uniform(-0.5, 0.5, value.shape[-1] // 2)
                    value = value * (np.stack([1 + e, 1 - e], -1).reshape(-1) / np.sqrt(2.0))
        elif (
            name == "embedding"
            or name == "null_embedding"
            or module in _NORMS
            or module.startswith("LayerNorm")
        ):
            value = np.repeat(value, 2, axis=-1)
        elif name == "kernel":
            value = _widen_rows(value, _input_blocks(key, value, hidden), rng)
            if module not in _HEADS:
                value = np.repeat(value, 2, axis=-1)
        elif name == "bias":
            if module not in _HEADS:
                value = np.repeat(value, 2, axis=-1)
        else:
            raise ValueError(f"cannot widen {'/'.join(key)}: unknown parameter")
        widened[key] = value.astype(dtype)
    return unflatten_dict(widened)
