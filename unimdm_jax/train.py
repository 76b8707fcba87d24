"""One generic trainer: ``python -m unimdm_jax.train --config configs/<name>.py [--workdir DIR]``.

- optax AdamW with global-norm clipping and warmup + cosine decay, parameter EMA;
- a jitted train step, data parallel over all local devices through ``jax.sharding``: the
  batch is split into one sub-batch per device (``num_shards``), gradients are averaged
  with ``pmean`` inside ``shard_map``; one code path for 1 CPU, 8 GPUs or a TPU slice
  (multi-host: call ``jax.distributed.initialize()`` first, ``--distributed``);
- orbax checkpoints every ``checkpoint_every`` steps; a restarted run resumes from the last
  saved step with the same data order (the batch order and the step's random key depend
  only on (seed, step));
- losses to ``metrics.csv`` and TensorBoard event files in the work dir, a progress bar;
- the objective is pluggable: ``TrainConfig.task`` names an entry of ``config.TASKS`` (the
  model, its init inputs, its loss and its metrics): ``"diffusion"`` (the Crystal DiT, the
  default) or ``"property"`` (the property oracle: masked L1 on normalised targets).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import struct
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from tensorboardX import SummaryWriter
from tqdm.auto import tqdm

from unimdm_jax import provenance
from unimdm_jax.checkpoint import (
    TRAIN_STATE_FILE,
    flatten,
    load_model,
    load_train_state,
    save_train_state,
    train_state_segments,
    unflatten,
)
from unimdm_jax.config import TrainConfig, get_task, load_config, property_columns, register_properties
from unimdm_jax.data import preprocess
from unimdm_jax.data.batching import BatchIterator
from unimdm_jax.model.growth import grow_params


class TrainState(struct.PyTreeNode):
    step: jax.Array
    params: Any
    ema_params: Any
    opt_state: Any


def make_optimizer(config: TrainConfig):
    schedule = optax.warmup_cosine_decay_schedule(
        0.0,
        config.learning_rate,
        config.warmup_steps,
        max(config.total_steps, config.warmup_steps + 1),
        0.01 * config.learning_rate,
    )
    return optax.chain(
        optax.clip_by_global_norm(config.grad_clip), optax.adamw(schedule, weight_decay=config.weight_decay)
    )


def prepare_config(config: TrainConfig, train_set) -> TrainConfig:
    """The config with its data-dependent settings filled in from the training split."""
    return get_task(config).prepare(config, train_set)


def init_state(config: TrainConfig, example_graphs):
    """(model, TrainState) for the config's task; ``example_graphs`` is a sharded batch."""
    task = get_task(config)
    model = task.make_model(config.model)
    graphs = jax.tree_util.tree_map(lambda x: x[0], example_graphs)  # one shard
    # jit: one compilation instead of one per eager op (~3x faster on CPU; same values up to
    # float32 rounding)
    params = jax.jit(model.init)(jax.random.PRNGKey(config.seed), *task.init_inputs(config, graphs))
    optimizer = make_optimizer(config)
    ema_params = jax.tree_util.tree_map(jnp.copy, params)  # distinct buffers: the step donates both
    state = TrainState(
        step=jnp.asarray(0), params=params, ema_params=ema_params, opt_state=optimizer.init(params)
    )
    return model, state


def warm_start(state: TrainState, config: TrainConfig, init_from: str | Path) -> TrainState:
    """``state`` with params and EMA params taken from a checkpoint (``TrainConfig.init_from``).

    Raises ValueError unless the checkpoint has exactly the parameter names and shapes of
    the config's model (a warm start never silently drops or re-initialises a layer). Across
    conditioning properties (a band-gap model warm-starting a formation-energy one), the i-th
    property's embedding initialises the i-th: the modules are named after the property.
    With ``config.init_grow`` a smaller Crystal DiT is first grown into the config's network
    (``model.growth``: same function, more layers and frequencies, twice the width)."""
    _, loaded, loaded_config, _ = load_model(init_from)
    if loaded_config.task != config.task:
        raise ValueError(
            f"init_from {init_from}: a {loaded_config.task!r} checkpoint, the config trains {config.task!r}"
        )
    old_names, new_names = (
        tuple(getattr(loaded_config.model, "properties", ())),
        tuple(getattr(config.model, "properties", ())),
    )
    if config.task == "diffusion" and old_names != new_names and len(old_names) == len(new_names):
        renames = {f"property_{old}": f"property_{new}" for old, new in zip(old_names, new_names)}
        loaded = {
            "params": unflatten(
                {
                    "/".join(renames.get(part, part) for part in key.split("/")): value
                    for key, value in flatten(loaded["params"]).items()
                }
            )
        }
    if config.init_grow:
        if config.task != "diffusion":
            raise ValueError("init_grow: only a Crystal DiT can be grown")
        loaded = {
            "params": grow_params(loaded["params"], loaded_config.model, state.params["params"], config.model)
        }
    expected = {
        jax.tree_util.keystr(k): v.shape for k, v in jax.tree_util.tree_leaves_with_path(state.params)
    }
    found = {jax.tree_util.keystr(k): np.shape(v) for k, v in jax.tree_util.tree_leaves_with_path(loaded)}
    if expected != found:
        differ = sorted(set(expected.items()) ^ set(found.items()))
        raise ValueError(
            f"init_from {init_from}: parameters do not match the config's model "
            f"(first difference: {differ[0][0]})"
        )
    params = jax.tree_util.tree_map(lambda new, old: jnp.asarray(old, new.dtype), state.params, loaded)
    ema_params = jax.tree_util.tree_map(jnp.copy, params)
    return state.replace(params=params, ema_params=ema_params, opt_state=make_optimizer(config).init(params))


def make_train_step(model, config: TrainConfig, columns, mesh):
    """The jitted data-parallel step: shard axis 0 of the batch over the mesh's devices."""
    loss_fn = get_task(config).make_loss(config)
    optimizer = make_optimizer(config)
    base_key = jax.random.PRNGKey(config.seed + 1)

    def per_shard(state, graphs):
        graphs = jax.tree_util.tree_map(lambda x: x[0], graphs)  # this device's sub-batch
        key = jax.random.fold_in(base_key, state.step)  # per-crystal keys are derived inside the loss
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        (_, metrics), grads = grad_fn(state.params, model, graphs, key, columns, "data")
        grads = jax.lax.psum(grads, "data")  # each shard's loss is its share of the global mean
        metrics = jax.lax.psum(metrics, "data")
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema = optax.incremental_update(params, state.ema_params, 1.0 - config.ema_decay)
        metrics["grad_norm"] = optax.global_norm(grads)
        return state.replace(step=state.step + 1, params=params, ema_params=ema, opt_state=opt_state), metrics

    step = jax.shard_map(
        per_shard, mesh=mesh, in_specs=(P(), P("data")), out_specs=(P(), P()), check_vma=False
    )
    return jax.jit(step, donate_argnums=(0,))


def make_eval_loss(model, config: TrainConfig, columns, mesh):
    loss_fn = get_task(config).make_loss(config)

    def per_shard(params, graphs, key):
        graphs = jax.tree_util.tree_map(lambda x: x[0], graphs)
        _, metrics = loss_fn(params, model, graphs, key, columns, "data", training=False)
        return jax.lax.psum(metrics, "data")

    return jax.jit(
        jax.shard_map(per_shard, mesh=mesh, in_specs=(P(), P("data"), P()), out_specs=P(), check_vma=False)
    )


def checkpoint_manager(workdir: Path, config: TrainConfig):
    options = ocp.CheckpointManagerOptions(max_to_keep=config.keep_checkpoints, create=True)
    return ocp.CheckpointManager((workdir / "checkpoints").absolute(), options=options)


def save_run_files(workdir: Path, config: TrainConfig, config_path: str | None):
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2))
    if config_path:
        (workdir / "config.py").write_text(Path(config_path).read_text())


def steps_per_second(config: TrainConfig, train_set, timed_steps: int = 30) -> float:
    """Training steps per second of ``config`` on this machine's devices, compilation excluded
    (to size a run to a wall-clock budget with the schedule's shape unchanged). Batches are
    padded to a few bucketed shapes, each compiled once: every shape met is compiled before
    the timed steps, and a timed step only ever runs an already compiled shape."""
    devices = np.asarray(jax.devices())
    mesh = Mesh(devices, ("data",))
    iterator = BatchIterator(
        train_set, config.batch_size, config.seed, num_shards=len(devices), fixed_budget=config.fixed_budget
    )
    model, state = init_state(config, iterator.sharded(0))
    step = make_train_step(model, config, property_columns(config.model, train_set.property_names), mesh)
    state = jax.device_put(state, NamedSharding(mesh, P()))
    sharding = NamedSharding(mesh, P("data"))
    batches = [iterator.sharded(i) for i in range(timed_steps)]
    compiled = set()
    for batch in batches:  # compile every shape the timed steps use, twice (donated buffers)
        shape = (batch.nodes["mask"].shape, batch.senders.shape)
        if shape not in compiled:
            for _ in range(2):
                state, metrics = step(state, jax.device_put(batch, sharding))
            compiled.add(shape)
    jax.block_until_ready(metrics)
    started = time.perf_counter()
    for batch in batches:
        state, metrics = step(state, jax.device_put(batch, sharding))
    jax.block_until_ready(metrics)
    return timed_steps / (time.perf_counter() - started)


def train(
    config: TrainConfig, workdir: Path, config_path: str | None = None, progress: bool = True, datasets=None
) -> TrainState:
    """Train ``config`` in ``workdir`` (resuming there when it has a saved step). ``datasets``:
    ``(train_set, eval_set)`` CrystalDatasets instead of the policy splits read through the
    preprocessing cache (a machine without the CSVs or pymatgen; ``unimdm_jax.remote``)."""
    workdir = Path(workdir)
    get_task(config)  # fail early on an unknown task or a mismatched model config
    devices = np.asarray(jax.devices())
    mesh = Mesh(devices, ("data",))
    num_shards = len(devices)

    if config.task == "diffusion":
        register_properties(config.model)  # a user's own property needs its unit
    if datasets is None:  # MP-20's policy splits, or CSV files of your own with the model's properties
        split = dict(root=config.data_root, properties=config.model.properties, progress=progress)
        train_set, failures = preprocess.load_split(config.train_split, **split)
        eval_set, _ = preprocess.load_split(config.eval_split, **split)
    else:
        (train_set, eval_set), failures = datasets, []
    if config.train_limit:
        train_set = train_set.select(np.arange(min(config.train_limit, len(train_set))))
    print(
        f"training on {len(train_set)} crystals ({len(failures)} failed symmetry extraction), "
        f"{num_shards} device(s): {devices[0].platform}",
        file=sys.stderr,
    )
    columns = property_columns(config.model, train_set.property_names)
    config = prepare_config(config, train_set)  # depends only on the data: same on resume
    save_run_files(workdir, config, config_path)

    manager = checkpoint_manager(workdir, config)
    iterator = BatchIterator(
        train_set, config.batch_size, config.seed, num_shards=num_shards, fixed_budget=config.fixed_budget
    )
    model, state = init_state(config, iterator.sharded(0))
    segments = []  # the training history carried by train state files
    if manager.latest_step() is not None:
        state = manager.restore(manager.latest_step(), args=ocp.args.StandardRestore(state))
        print(f"resumed from step {int(state.step)}", file=sys.stderr)
        if (workdir / TRAIN_STATE_FILE).exists():
            segments = train_state_segments(workdir / TRAIN_STATE_FILE)  # this process adds its own
    elif config.resume_from:
        state = load_train_state(state, config.resume_from)
        segments = train_state_segments(config.resume_from)
        print(f"resumed from {config.resume_from} at step {int(state.step)}", file=sys.stderr)
    elif config.init_from:
        state = warm_start(state, config, config.init_from)
        print(f"initialised from {config.init_from}", file=sys.stderr)
    iterator.step = int(state.step)
    replicated = NamedSharding(mesh, P())
    batch_sharding = NamedSharding(mesh, P("data"))
    state = jax.device_put(state, replicated)
    train_step = make_train_step(model, config, columns, mesh)
    eval_loss = make_eval_loss(model, config, columns, mesh)

    writer = SummaryWriter(str(workdir / "tensorboard"))
    csv_path = workdir / "metrics.csv"
    new_csv = not csv_path.exists()
    csv_file = open(csv_path, "a", newline="")
    fields = [
        "step",
        "split",
        *get_task(config).metric_names(config),
        "grad_norm",
        "crystals_per_s",
        "wall_s",
    ]
    log = csv.DictWriter(csv_file, fieldnames=fields, extrasaction="ignore")
    if new_csv:
        log.writeheader()

    start_step = int(state.step)
    machine = provenance.machine()  # recorded in the train state file's segments
    bar = tqdm(
        total=config.total_steps,
        initial=start_step,
        desc="train",
        unit="step",
        disable=not progress,
        file=sys.stderr,
    )
    window_start, window_steps, started = time.perf_counter(), 0, time.perf_counter()
    metrics = None
    for step in range(start_step, config.total_steps):
        batch = jax.device_put(next(iterator), batch_sharding)
        state, metrics = train_step(state, batch)
        window_steps += 1
        bar.update()
        done = step + 1
        if done % config.log_every == 0 or done == config.total_steps:
            values = {k: float(v) for k, v in jax.device_get(metrics).items()}
            elapsed = time.perf_counter() - window_start
            values["crystals_per_s"] = window_steps * config.batch_size / elapsed
            values["wall_s"] = time.perf_counter() - started
            log.writerow({"step": done, "split": "train", **values})
            csv_file.flush()
            for name, value in values.items():
                writer.add_scalar(f"train/{name}", value, done)
            bar.set_postfix(loss=f"{values['loss']:.4f}", cps=f"{values['crystals_per_s']:.0f}")
            window_start, window_steps = time.perf_counter(), 0
        if done % config.eval_every == 0 or done == config.total_steps:
            values = evaluate_loss(eval_loss, state.ema_params, eval_set, config, num_shards, batch_sharding)
            log.writerow({"step": done, "split": config.eval_split, **values})
            csv_file.flush()
            for name, value in values.items():
                writer.add_scalar(f"{config.eval_split}/{name}", value, done)
        if done % config.checkpoint_every == 0 or done == config.total_steps:
            manager.save(done, args=ocp.args.StandardSave(state))
            segment = {
                "workdir": str(workdir),
                "from_step": start_step,
                "to_step": done,
                "wall_seconds": round(time.perf_counter() - started, 1),
                "machine": machine,
                "resume_from": config.resume_from,
                "init_from": config.init_from,
            }
            save_train_state(jax.device_get(state), workdir / TRAIN_STATE_FILE, [*segments, segment])
    manager.wait_until_finished()
    bar.close()
    csv_file.close()
    writer.close()
    return state


def evaluate_loss(eval_loss, params, dataset, config: TrainConfig, num_shards, sharding):
    """Mean loss and metrics over a fixed set of batches (and, for diffusion, noise levels),
    for model selection."""
    iterator = BatchIterator(
        dataset,
        min(config.batch_size, len(dataset) // num_shards * num_shards),
        seed=12345,
        num_shards=num_shards,
        shuffle=False,
        fixed_budget=config.fixed_budget,
    )
    totals: dict[str, float] = {}
    count = min(config.eval_batches, iterator.steps_per_epoch)
    for i in range(count):
        batch = jax.device_put(iterator.sharded(i), sharding)
        metrics = jax.device_get(eval_loss(params, batch, jax.random.PRNGKey(i)))
        for name, value in metrics.items():
            totals[name] = totals.get(name, 0.0) + float(value) / count
    return totals


def _parse_like(text: str, like, where: str):
    """``text`` as a value of the type of ``like`` (the field's current value)."""
    text = text.strip()
    if isinstance(like, tuple):
        items = [t for t in text.split(",") if t.strip()]
        if like and isinstance(like[0], tuple):  # ranges: "lo:hi,lo:hi"
            ranges = [t.split(":") for t in items]
            if any(len(r) != 2 for r in ranges):
                raise ValueError(f"{where}: expected ranges lo:hi[,lo:hi...], got {text!r}")
            return tuple(tuple(_parse_like(v, 0.0, where) for v in r) for r in ranges)
        return tuple(_parse_like(t, like[0] if like else "", where) for t in items)
    if isinstance(like, bool):
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"{where}: expected true or false, got {text!r}")
        return text.lower() in ("true", "1")
    if text.lower() == "none" and (like is None or isinstance(like, str)):  # an optional field
        return None
    if like is None:  # a number if it reads as one, else the text
        for kind in (int, float):
            try:
                return kind(text)
            except ValueError:
                pass
        return text
    try:
        return type(like)(text)
    except ValueError:
        raise ValueError(f"{where}: expected {type(like).__name__}, got {text!r}") from None


def override(config, item: str):
    """A copy of a (nested) config dataclass with ``KEY=VALUE`` set, ``model.hidden=64`` style;
    the value is parsed as the field's current type (ValueError, one line, otherwise)."""
    key, sep, value = item.partition("=")
    if not sep:
        raise ValueError(f"expected KEY=VALUE, got {item!r}")
    head, _, rest = key.strip().partition(".")
    if not dataclasses.is_dataclass(config) or head not in {f.name for f in dataclasses.fields(config)}:
        raise ValueError(f"{key.strip()}: no such config field")
    current = getattr(config, head)
    if rest:
        return dataclasses.replace(config, **{head: override(current, f"{rest}={value}")})
    return dataclasses.replace(config, **{head: _parse_like(value, current, key.strip())})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m unimdm_jax.train", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="a configs/*.py file with get_config()")
    parser.add_argument("--workdir", default=None, help="default: workdirs/<config name>")
    parser.add_argument("--steps", type=int, default=None, help="override total_steps")
    parser.add_argument(
        "--init-from",
        default=None,
        help="override init_from (warm start from a checkpoint; 'none': from scratch)",
    )
    parser.add_argument(
        "--resume-from",
        default=None,
        help="continue from a train state file (e.g. a committed workdir/train_state.safetensors)",
    )
    parser.add_argument(
        "--distributed", action="store_true", help="call jax.distributed.initialize() (multi-host)"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. train_split=my_train.csv, model.properties=density, "
        "model.property_units=g/cm3, model.property_ranges=0:12 (tuples: comma-separated; ranges: lo:hi)",
    )
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except (OSError, ValueError, AttributeError, SyntaxError) as error:
        print(f"error: cannot load config {args.config}: {error}", file=sys.stderr)
        return 1
    try:
        for item in args.set:
            config = override(config, item)
    except ValueError as error:
        print(f"error: --set {error}", file=sys.stderr)
        return 1
    if args.steps is not None:
        config = dataclasses.replace(config, total_steps=args.steps)
    if args.init_from is not None:
        config = dataclasses.replace(config, init_from=None if args.init_from == "none" else args.init_from)
    if args.resume_from is not None:
        config = dataclasses.replace(config, resume_from=args.resume_from)
    if args.distributed:
        jax.distributed.initialize()
    workdir = Path(args.workdir or Path("workdirs") / Path(args.config).stem)
    try:
        train(config, workdir, args.config, progress=not args.no_progress)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
