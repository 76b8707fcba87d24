"""Benchmark: training and sampling throughput of a Crystal DiT config on this machine.

    python benchmarks/throughput.py --config configs/dit_mp20_cpu.py [--train-steps 20] [--sample-batches 2]

Uses the fixture's or MP-20's training crystals (the cached preprocessing; nothing is
trained for real: throughput does not depend on the weights). Training: crystals/s over
``--train-steps`` steps after one warm-up step per padded shape. Sampling: crystals/s for
the full T-step predictor-corrector chain (2 network evaluations per step), timed after
compilation, plus the compile time and the number of compiled programs (1 means no
recompilation between batches of the same padded shape; the scan has no per-step Python).
Writes benchmarks/results/throughput_<config>.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402


def main() -> None:
    import jax
    import jax.numpy as jnp
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    from unimdm_jax.config import load_config, property_columns
    from unimdm_jax.data.batching import BatchIterator, PaddedBatches
    from unimdm_jax.data.preprocess import load_policy_split
    from unimdm_jax.objective import make_schedules
    from unimdm_jax.reverse_diffusion import sample
    from unimdm_jax.train import init_state, make_train_step

    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--train-steps", type=int, default=20)
    parser.add_argument("--sample-batch-size", type=int, default=None)
    parser.add_argument("--sample-batches", type=int, default=2)
    parser.add_argument("--split", default="holdout", help="crystals to batch (cached policy split)")
    args = parser.parse_args()
    config = load_config(args.config)
    dataset, _ = load_policy_split(args.split, progress=False)
    devices = np.asarray(jax.devices())
    mesh = Mesh(devices, ("data",))
    columns = property_columns(config.model, dataset.property_names)

    iterator = BatchIterator(dataset, config.batch_size, seed=0, num_shards=len(devices))
    model, state = init_state(config, iterator.sharded(0))
    step = make_train_step(model, config, columns, mesh)
    state = jax.device_put(state, NamedSharding(mesh, P()))
    batches = [
        jax.device_put(iterator.sharded(i), NamedSharding(mesh, P("data"))) for i in range(args.train_steps)
    ]
    seen = set()
    for batch in batches:  # compile every shape first
        shape = batch.nodes["frac_coords"].shape
        if shape not in seen:
            seen.add(shape)
            state, metrics = step(state, batch)
            jax.block_until_ready(metrics)
    started = time.perf_counter()
    for batch in batches:
        state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    train_seconds = time.perf_counter() - started
    train_rate = args.train_steps * config.batch_size / train_seconds

    sample_batch = args.sample_batch_size or config.batch_size
    schedules = make_schedules(config.diffusion)
    batches = PaddedBatches(
        dataset, sample_batch, indices=np.arange((args.sample_batches + 1) * sample_batch)
    )
    budget = batches.budget
    timings = []
    for number, (_, graphs) in enumerate(batches):
        graphs = jax.tree_util.tree_map(jnp.asarray, graphs)
        condition = jnp.ones((budget.graphs, len(columns)))
        started = time.perf_counter()
        x, k = sample(
            state.ema_params,
            model,
            graphs,
            jax.random.PRNGKey(number),
            schedules,
            config.diffusion,
            condition,
            jnp.ones((budget.graphs, len(columns)), bool),
        )
        jax.block_until_ready((x, k))
        timings.append(time.perf_counter() - started)
    steady = float(np.mean(timings[1:]))
    write_result(
        Path(__file__).parent / "results" / f"throughput_{Path(args.config).stem}.json",
        {
            "benchmark": "throughput",
            "config": args.config,
            "data": f"policy split '{args.split}' of MP-20 (cached preprocessing)",
            "train": {
                "batch_size": config.batch_size,
                "steps_timed": args.train_steps,
                "crystals_per_second": round(train_rate, 1),
                "compiled_shapes": len(seen),
            },
            "sample": {
                "timesteps": config.diffusion.timesteps,
                "network_evaluations": 2 * config.diffusion.timesteps,
                "batch_size": sample_batch,
                "padded_nodes": budget.nodes,
                "padded_edges": budget.edges,
                "first_call_seconds_including_compile": round(timings[0], 2),
                "seconds_per_batch": round(steady, 2),
                "crystals_per_second": round(sample_batch / steady, 3),
                "compiled_programs": int(sample._cache_size()),
            },
        },
    )


if __name__ == "__main__":
    main()
