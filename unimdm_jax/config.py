"""Training configuration and the task registry, shared by the trainer and the checkpoints.

``TrainConfig`` is what a ``configs/*.py`` file's ``get_config()`` returns; ``TrainConfig.task``
names an entry of ``TASKS`` (the model, its init inputs, its loss and its metrics):
``"diffusion"`` (the Crystal DiT, the default) or ``"property"`` (the property oracle).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
from pathlib import Path
from typing import Callable

import jax.numpy as jnp
import numpy as np

from unimdm_jax.model import CrystalDiT, ModelConfig, OracleConfig, PropertyOracle
from unimdm_jax.objective import DiffusionConfig, clean_k, diffusion_loss, make_schedules, property_loss
from unimdm_jax.schema import KNOWN_PROPERTY_UNITS, register_property


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    model: ModelConfig | OracleConfig = ModelConfig()  # the class TASKS[task] expects
    diffusion: DiffusionConfig = DiffusionConfig()  # used by the diffusion task only
    task: str = "diffusion"  # a key of TASKS
    # property task: std of Gaussian noise added to the fractional coordinates while
    # training (0 = off), so the oracle sees slightly imperfect structures
    coord_noise: float = 0.0
    batch_size: int = 64
    total_steps: int = 10_000
    learning_rate: float = 1e-3
    warmup_steps: int = 500
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    seed: int = 0
    log_every: int = 50
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    # pad every batch to the largest one the data can form: one compiled shape instead of one per
    # (node, edge) rung met (data.batching.largest_budget); for short runs where compiling dominates
    fixed_budget: bool = False
    # a policy split of MP-20 (data.preprocess.load_policy_split) or a CSV file of your own
    # (a CIF column and the model's property columns; data.preprocess.load_split)
    train_split: str = "train"
    eval_split: str = "holdout"
    eval_every: int = 1000
    eval_batches: int = 16  # batches of eval_split scored at each evaluation (fixed noise)
    data_root: str | None = None  # default: io.default_data_root()
    train_limit: int | None = None  # use the first N training crystals (smoke runs)
    # warm start: the (EMA) parameters of an exported checkpoint folder or a training work
    # dir, with the same parameter shapes; the optimizer starts fresh. Used only when the
    # work dir has no saved step yet (a resumed run continues from its own checkpoint).
    init_from: str | None = None
    # init_from is a smaller Crystal DiT (fewer layers / frequencies, half the width): grow it into
    # the config's network so that training starts from its function (model/growth.py)
    init_grow: bool = False
    # resume: a train state file (checkpoint.save_train_state; a work dir's
    # train_state.safetensors, committed at the end of a segment) to continue from, optimizer
    # and step included, when the work dir has no saved step yet. Takes precedence over init_from.
    resume_from: str | None = None


def load_config(path: str | Path) -> TrainConfig:
    """The TrainConfig of a config file's get_config() (configs may build on another config with this)."""
    spec = importlib.util.spec_from_file_location(f"_unimdm_config_{Path(path).stem}", path)
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot load config {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def register_properties(model_config) -> None:
    """Register the units a model config names for its properties (a user's own property), so
    that the schema, the prompts and the command line know them; ValueError when a property is
    neither built in nor given a unit."""
    names = tuple(model_config.properties)
    units = tuple(model_config.property_units)
    if units and len(units) != len(names):
        raise ValueError(f"model.property_units has {len(units)} unit(s) for {len(names)} properties")
    for name, unit in zip(names, units):
        register_property(name, unit)
    unknown = [name for name in names if name not in KNOWN_PROPERTY_UNITS]
    if unknown:
        raise ValueError(f"property {unknown[0]!r} is not built in: give its unit in model.property_units")


def property_columns(model_config: ModelConfig, property_names) -> tuple[int, ...]:
    missing = [p for p in model_config.properties if p not in property_names]
    if missing:
        raise ValueError(f"the dataset has no property column {missing[0]!r}")
    return tuple(list(property_names).index(p) for p in model_config.properties)


# --------------------------------------------------------------------------------------
# Tasks: what the generic trainer needs to know about one objective
# --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Task:
    model_config: type  # the dataclass of TrainConfig.model
    make_model: Callable  # model config -> flax Module
    init_inputs: Callable  # (config, graphs of one shard) -> the module's call arguments
    # config -> loss(params, model, graphs, key, columns, axis_name, training) -> (loss, metrics);
    # with axis_name, each shard's loss and metrics are its share of the global-batch mean
    make_loss: Callable
    metric_names: Callable  # config -> names of the metrics the loss returns (metrics.csv columns)
    prepare: Callable = lambda config, train_set: config  # fill data-dependent settings


def _diffusion_init_inputs(config: TrainConfig, graphs):
    num_graphs = graphs.globals["spacegroup"].shape[0]
    num_props = len(config.model.properties)
    return (
        graphs,
        graphs.nodes["frac_coords"],
        jnp.zeros((num_graphs, 6)),
        jnp.ones((num_graphs,), jnp.int32),
        jnp.zeros((num_graphs, num_props)),
        jnp.ones((num_graphs, num_props), bool),
    )


def _make_diffusion_loss(config: TrainConfig):
    schedules = make_schedules(config.diffusion)
    no_dropout = dataclasses.replace(config.diffusion, condition_dropout=0.0)  # evaluation

    def loss(params, model, graphs, key, columns, axis_name=None, training=True):
        diffusion = config.diffusion if training else no_dropout
        return diffusion_loss(params, model, graphs, key, schedules, diffusion, columns, axis_name)

    return loss


def _property_init_inputs(config: TrainConfig, graphs):
    return graphs, graphs.nodes["frac_coords"], clean_k(graphs)


def _prepare_property(config: TrainConfig, train_set) -> TrainConfig:
    """Target normalisation from the training split (NaN ignored), unless the config sets it."""
    if config.model.target_mean is not None and config.model.target_std is not None:
        return config
    values = train_set.properties[:, list(property_columns(config.model, train_set.property_names))]
    mean = tuple(round(float(v), 6) for v in np.nanmean(values, axis=0))
    std = tuple(round(float(v), 6) for v in np.maximum(np.nanstd(values, axis=0), 1e-6))
    return dataclasses.replace(
        config, model=dataclasses.replace(config.model, target_mean=mean, target_std=std)
    )


TASKS: dict[str, Task] = {
    "diffusion": Task(
        model_config=ModelConfig,
        make_model=CrystalDiT,
        init_inputs=_diffusion_init_inputs,
        make_loss=_make_diffusion_loss,
        metric_names=lambda config: ("loss", "coord_loss", "lattice_loss"),
    ),
    "property": Task(
        model_config=OracleConfig,
        make_model=PropertyOracle,
        init_inputs=_property_init_inputs,
        make_loss=lambda config: functools.partial(property_loss, config=config),
        metric_names=lambda config: ("loss", *(f"mae_{name}" for name in config.model.properties)),
        prepare=_prepare_property,
    ),
}


def get_task(config: TrainConfig) -> Task:
    if config.task not in TASKS:
        raise ValueError(f"unknown task {config.task!r}: expected one of {', '.join(TASKS)}")
    task = TASKS[config.task]
    if not isinstance(config.model, task.model_config):
        raise ValueError(
            f"task {config.task!r} needs model={task.model_config.__name__}(...), "
            f"got {type(config.model).__name__}"
        )
    return task
