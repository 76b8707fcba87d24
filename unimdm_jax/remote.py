"""Train and sample on a machine that has only JAX (a lent GPU), match here.

A borrowed accelerator has JAX, flax, optax and orbax but no pymatgen, pyxtal or the MP-20
CSVs, and a few minutes of time. The work is split so that only array code runs there:

    # here: the policy's splits as arrays (from the preprocessing cache) + the missing wheels
    python -m unimdm_jax.remote pack --out .carry/mp20
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \\
        --platform manylinux2014_x86_64 -d .whl jraph==0.0.6.dev0 tensorboardX==2.6.5
    # there (one command, carry .carry and .whl; see benchmarks/README.md, "One-shot GPU run"):
    bash benchmarks/gpu_oneshot.sh    # = python -m unimdm_jax.remote run --data .carry/mp20 \\
                                      #     --config configs/dit_mp20_paper.py --train-seconds ... --out $OUT
    # here, on what came back:
    python -m unimdm_jax.remote match --samples FILES_AT --csv ../shared/data/mp_20/test.csv.gz \\
        --out benchmarks/results/dit_csp_mp20_gpu.json

``run`` sizes the training to the time budget (steps per second measured first, the config's
schedule shape kept), trains with the generic trainer, then samples the test split in its
file order until the sampling budget is spent, and writes to ``--out``: the EMA weights in
bfloat16 safetensors shards (each under ``--shard-mb``), ``config.json``, ``samples.npz``
(per sampled crystal its source row, lattice parameters and fractional coordinates) and
``run.json`` (steps, seconds, device, seconds per structure). ``match`` rebuilds the
structures with pymatgen, matches them against the CSV's CIFs and writes match rate and RMSE
with their standard errors; ``load_shards`` turns the weights back into a checkpoint folder.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import jax
import ml_dtypes
import numpy as np
from safetensors.numpy import load_file, save_file

from unimdm_jax.checkpoint import flatten, unflatten
from unimdm_jax.config import get_task, load_config
from unimdm_jax.data.io import read_rows
from unimdm_jax.data.preprocess import CrystalDataset, load_policy_split
from unimdm_jax.dataset_sampling import sample_dataset
from unimdm_jax.errors import one_line
from unimdm_jax.evaluate import match_all
from unimdm_jax.metrics import match_summary
from unimdm_jax.provenance import write_result
from unimdm_jax.train import steps_per_second, train

SPLITS = ("train", "holdout", "test")


def pack(out: Path, data_root=None, splits=SPLITS) -> dict:
    """Write the policy's splits as CrystalDataset arrays (``<split>.npz``) into ``out``."""

    out.mkdir(parents=True, exist_ok=True)
    sizes = {}
    for split in splits:
        dataset, _ = load_policy_split(split, data_root)
        dataset.save(out / f"{split}.npz")
        sizes[split] = len(dataset)
    (out / "manifest.json").write_text(json.dumps({"crystals": sizes}, indent=2))
    return sizes


def save_shards(params: dict, out: Path, shard_mb: float = 15.0, dtype: str = "bfloat16") -> list[Path]:
    """Flattened parameters in safetensors files of at most ``shard_mb`` MB each (``dtype``:
    bfloat16 halves the size; float32 keeps them exactly)."""

    flat = flatten(params["params"])
    cast = np.dtype(ml_dtypes.bfloat16) if dtype == "bfloat16" else np.dtype(dtype)
    shards, current, size = [], {}, 0
    for name in sorted(flat):
        value = flat[name].astype(cast)
        if current and size + value.nbytes > shard_mb * 1e6:
            shards.append(current)
            current, size = {}, 0
        current[name] = value
        size += value.nbytes
    shards.append(current)
    paths = []
    for i, shard in enumerate(shards):
        path = out / f"weights-{i:02d}-of-{len(shards):02d}.safetensors"
        save_file(shard, str(path))
        paths.append(path)
    return paths


def load_shards(folder: Path) -> dict:
    """The ``{"params": ...}`` tree of the weight shards in ``folder`` (as float32)."""

    flat = {}
    for path in sorted(Path(folder).glob("weights-*-of-*.safetensors")):
        flat.update({k: np.asarray(v, np.float32) for k, v in load_file(str(path)).items()})
    if not flat:
        raise FileNotFoundError(f"no weights-*.safetensors shards in {folder}")
    return {"params": unflatten(flat)}


def override(config, overrides: dict):
    """``config`` with fields replaced:
    ``{"batch_size": 8, "model.hidden": 32, "diffusion.timesteps": 50}``."""
    nested = {"model": {}, "diffusion": {}}
    top = {}
    for key, value in overrides.items():
        part, _, field = key.partition(".")
        if field and part in nested:
            nested[part][field] = tuple(value) if isinstance(value, list) else value
        else:
            top[key] = value
    return dataclasses.replace(
        config,
        model=dataclasses.replace(config.model, **nested["model"]),
        diffusion=dataclasses.replace(config.diffusion, **nested["diffusion"]),
        **top,
    )


def run(
    data: Path,
    config_path: str,
    out: Path,
    train_seconds: float,
    sample_seconds: float,
    workdir: Path,
    batch_size: int | None = None,
    sample_batch_size: int = 256,
    overrides: dict | None = None,
    shard_mb: float = 15.0,
    sample_limit: int | None = None,
) -> dict:
    """Train ``config_path`` for about ``train_seconds`` on the arrays in ``data``, sample the
    test split for about ``sample_seconds``, and write weights, samples and a report to ``out``."""

    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    config = load_config(config_path)
    if overrides:
        config = override(config, overrides)
    if batch_size:
        config = dataclasses.replace(config, batch_size=batch_size)
    train_set, holdout, test = (CrystalDataset.load(data / f"{s}.npz") for s in SPLITS)
    rate = steps_per_second(config, train_set)
    steps = max(int(train_seconds * rate), 1)
    config = dataclasses.replace(
        config,
        total_steps=steps,
        warmup_steps=min(config.warmup_steps, max(steps // 10, 1)),
        checkpoint_every=steps,
        eval_every=steps,
        log_every=max(steps // 50, 1),
    )
    train_started = time.perf_counter()
    state = train(config, workdir, progress=False, datasets=(train_set, holdout))
    train_wall = time.perf_counter() - train_started
    params = jax.device_get(state.ema_params)  # the EMA weights, as every evaluation uses them
    shards = save_shards(params, out, shard_mb)
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2))
    model = get_task(config).make_model(config.model)
    if sample_limit is not None:
        test = test.select(np.arange(min(sample_limit, len(test))))
    sample_started = time.perf_counter()
    samples, seconds_per_crystal = sample_dataset(
        model,
        params,
        config,
        test,
        sample_batch_size,
        progress=False,
        as_arrays=True,
        deadline=sample_started + sample_seconds,
    )
    sample_wall = time.perf_counter() - sample_started
    n = len(samples)
    counts = np.asarray([len(x) for x, _ in samples], np.int64)
    atomic_numbers = test.atomic_numbers[: test.atom_offsets[n]]  # the sampled crystals' atoms, in order
    np.savez_compressed(
        out / "samples.npz",
        source=test.source[:n],
        material_id=test.material_id[:n],
        num_atoms=counts,
        atomic_numbers=atomic_numbers,
        lattice_parameters=np.stack([lp for _, lp in samples]).astype(np.float64),
        frac_coords=np.concatenate([x for x, _ in samples]).astype(np.float32),
    )
    device = jax.devices()[0]
    report = {
        "config": config_path,
        "model": dataclasses.asdict(config.model),
        "batch_size": config.batch_size,
        "device": f"{len(jax.devices())} x {device.platform} ({device.device_kind})",
        "measured_steps_per_second": rate,
        "steps": steps,
        "epochs": round(steps * config.batch_size / len(train_set), 2),
        "train_wall_seconds": round(train_wall, 1),
        "sampled": n,
        "test_rows": len(test),
        "sample_wall_seconds_including_compile": round(sample_wall, 1),
        "seconds_per_structure": seconds_per_crystal,
        "timesteps": config.diffusion.timesteps,
        "weight_shards": [p.name for p in shards],
        "total_wall_seconds": round(time.perf_counter() - started, 1),
    }
    (out / "run.json").write_text(json.dumps(report, indent=2))
    return report


def match(samples_dir: Path, csv: Path, processes: int | None = None) -> dict:
    """Match rate and RMSE (with standard errors) of the structures in ``samples.npz`` against
    the CSV rows they were sampled for (the paper's StructureMatcher)."""
    # pymatgen on use: the JAX-only machine that runs `run` has none
    from pymatgen.core import Lattice, Structure

    with np.load(Path(samples_dir) / "samples.npz", allow_pickle=False) as data:
        samples = {k: data[k] for k in data.files}
    run_file = Path(samples_dir) / "run.json"
    report = json.loads(run_file.read_text()) if run_file.exists() else {}
    cifs = {r.source: r.cif for r in read_rows([csv])}
    offsets = np.concatenate([[0], np.cumsum(samples["num_atoms"])])
    structures, references = [], []
    for i, source in enumerate(samples["source"]):
        atoms = slice(offsets[i], offsets[i + 1])
        lattice = Lattice.from_parameters(*[float(v) for v in samples["lattice_parameters"][i]])
        structures.append(
            Structure(
                lattice,
                [int(z) for z in samples["atomic_numbers"][atoms]],
                samples["frac_coords"][atoms].astype(np.float64),
            )
        )
        references.append(cifs[str(source)])
    rms = match_all(references, structures, processes)
    return {
        "benchmark": "csp_true_symmetry",
        "n": len(structures),
        "csv": str(csv),
        "rows": "the first n rows of the file",
        **match_summary(rms),
        "remote_run": report,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m unimdm_jax.remote", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="the policy's splits as arrays, for a machine without pymatgen")
    p.add_argument("--out", required=True)
    p.add_argument("--data-root", default=None)
    r = sub.add_parser("run", help="(on the accelerator) train for a time budget, sample the test split")
    r.add_argument("--data", required=True, help="a folder written by pack")
    r.add_argument("--config", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--workdir", default="/tmp/unimdm_remote_workdir")
    r.add_argument("--train-seconds", type=float, required=True)
    r.add_argument("--sample-seconds", type=float, required=True)
    r.add_argument("--batch-size", type=int, default=None, help="override the config's training batch")
    r.add_argument("--sample-batch-size", type=int, default=256)
    r.add_argument("--sample-limit", type=int, default=None, help="sample at most the first N test rows")
    r.add_argument("--shard-mb", type=float, default=15.0)
    r.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="FIELD=JSON",
        help="TrainConfig overrides, e.g. model.hidden=32 diffusion.timesteps=50 train_limit=64",
    )
    m = sub.add_parser("match", help="(here) match what run sampled")
    m.add_argument("--samples", required=True, help="the folder with samples.npz and run.json")
    m.add_argument("--csv", required=True)
    m.add_argument("--out", default=None)
    m.add_argument("--processes", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        if args.command == "pack":
            print(json.dumps(pack(Path(args.out), args.data_root)))
        elif args.command == "run":
            overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
            report = run(
                Path(args.data),
                args.config,
                Path(args.out),
                args.train_seconds,
                args.sample_seconds,
                Path(args.workdir),
                args.batch_size,
                args.sample_batch_size,
                overrides,
                args.shard_mb,
                args.sample_limit,
            )
            print(json.dumps(report, indent=2))
        else:
            result = match(Path(args.samples), Path(args.csv), args.processes)
            if args.out:
                write_result(args.out, result)
            print(json.dumps({k: result[k] for k in ("n", "match_rate", "match_rate_se", "rmse")}))
    except (OSError, ValueError, KeyError) as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
