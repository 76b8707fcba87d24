"""Exported model checkpoints: safetensors weights + JSON config + model card (no pickle).

Training writes orbax checkpoints of the full train state into its work dir; ``export``
turns the EMA parameters of one step into a small folder that ships inside the package:

    model.safetensors   float32 EMA parameters, keys are '/'-joined Flax paths
    config.json         the TrainConfig it was trained with
    model_card.json     data, training command, time, hardware, metrics (see README)

A *train state file* (``save_train_state``; the trainer writes ``train_state.safetensors``
into its work dir at every checkpoint) holds the whole state needed to resume (step, params,
EMA params, optimizer moments) in safetensors, keyed by pytree path, with the segments
trained so far in its metadata: committed, it lets the next training segment continue on any
machine (``TrainConfig.resume_from`` / ``train --resume-from``). A state over 24 MB is split
into the main file and part files it names (``train_state_files``), each under the 25 MB rule.

``load_model`` reads either such a folder or a training work dir (latest orbax step) and
returns the module of the config's task (``config.TASKS``: the Crystal DiT or the property
oracle). Configs exported before tasks existed have no ``task`` field: they are diffusion.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import sys
import uuid
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from unimdm_jax import provenance
from unimdm_jax.config import TASKS, TrainConfig, register_properties
from unimdm_jax.errors import one_line
from unimdm_jax.objective import DiffusionConfig

PACKAGED = Path(__file__).parent / "checkpoints"
TRAIN_STATE_FILE = "train_state.safetensors"  # a work dir's portable copy of its latest checkpoint


class CheckpointError(ValueError):
    """A checkpoint is missing, incomplete or corrupt."""


def flatten(tree, prefix=()) -> dict[str, np.ndarray]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, prefix + (key,)))
        else:
            flat["/".join(prefix + (key,))] = np.asarray(value, dtype=np.float32)
    return flat


def unflatten(flat: dict[str, np.ndarray]) -> dict:
    tree: dict = {}
    for key, value in flat.items():
        node = tree
        *parents, leaf = key.split("/")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


#: Each file of a train state stays under this size (the 25 MB rule for committed files): a
#: larger state is written as the main file plus part files that the main file names.
MAX_TRAIN_STATE_FILE_BYTES = 24_000_000


def save_train_state(
    state, path: Path | str, segments: list | None = None, max_file_bytes: int = MAX_TRAIN_STATE_FILE_BYTES
) -> Path:
    """Write a TrainState (any pytree) to safetensors, atomically; ``segments`` (JSON-able) is the
    training history kept in its metadata. A state over ``max_file_bytes`` is split: ``path``
    holds the first arrays and names the part files (``<stem>.part2-<token>.safetensors``, ...)
    that hold the rest; the parts are written first and the main file last, so a reader never
    sees a main file whose parts are missing, and the parts of earlier saves are then removed.
    Commit every file of ``train_state_files(path)``."""
    arrays = {
        jax.tree_util.keystr(p): np.asarray(leaf) for p, leaf in jax.tree_util.tree_leaves_with_path(state)
    }
    groups: list[dict] = [{}]
    size = 0
    for name, array in arrays.items():  # in tree order; one array over the limit gets a file alone
        if groups[-1] and size + array.nbytes > max_file_bytes:
            groups.append({})
            size = 0
        groups[-1][name] = array
        size += array.nbytes
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:8]
    parts = [f"{path.stem}.part{i}-{token}{path.suffix}" for i in range(2, len(groups) + 1)]
    for name, group in zip(parts, groups[1:]):
        tmp = path.with_name(f"{name}.tmp")
        save_file(group, str(tmp))
        os.replace(tmp, path.with_name(name))
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    metadata = {"segments": json.dumps(segments or []), "parts": json.dumps(parts)}
    save_file(groups[0], str(tmp), metadata=metadata)
    os.replace(tmp, path)
    for old in path.parent.glob(f"{path.stem}.part*{path.suffix}"):
        if old.name not in parts:
            old.unlink(missing_ok=True)
    return path


def _train_state_metadata(path: Path | str) -> dict:
    with safe_open(str(path), framework="numpy") as handle:
        return handle.metadata() or {}


def train_state_segments(path: Path | str) -> list:
    """The training history stored in a train state file's metadata."""
    return json.loads(_train_state_metadata(path).get("segments", "[]"))


def train_state_files(path: Path | str) -> list[Path]:
    """The main train state file and the part files it names (all of them to commit or copy)."""
    path = Path(path)
    return [
        path,
        *(path.with_name(name) for name in json.loads(_train_state_metadata(path).get("parts", "[]"))),
    ]


def load_train_state(template, path: Path | str):
    """The state of ``template``'s structure with the arrays of a train state file (and its
    parts); raises CheckpointError unless they hold exactly the template's paths and shapes."""
    try:
        arrays = {}
        for file in train_state_files(path):
            if not file.is_file():
                raise CheckpointError(f"train state {path} names the part {file.name}, which is missing")
            arrays.update(load_file(str(file)))
    except CheckpointError:
        raise
    except Exception as error:  # noqa: BLE001 - any decoding failure means a corrupt file
        raise CheckpointError(
            f"corrupt train state {path}: {type(error).__name__}: {one_line(error)}"
        ) from error
    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    names = [jax.tree_util.keystr(p) for p, _ in leaves]
    if set(names) != set(arrays):
        differ = sorted(set(names) ^ set(arrays))
        raise CheckpointError(
            f"train state {path} does not match the config's model (first difference: {differ[0]})"
        )
    for name, (_, leaf) in zip(names, leaves):
        if np.shape(leaf) != arrays[name].shape:
            raise CheckpointError(
                f"train state {path}: {name} has shape {arrays[name].shape}, expected {np.shape(leaf)}"
            )
    return jax.tree_util.tree_unflatten(
        treedef, [np.asarray(arrays[n], np.asarray(leaf).dtype) for n, (_, leaf) in zip(names, leaves)]
    )


def _tuples(value):
    """JSON lists back to the (nested) tuples of the frozen config dataclasses."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def config_from_dict(data: dict):
    task = data.get("task", "diffusion")
    if task not in TASKS:
        raise CheckpointError(f"unknown task {task!r} in the config")
    model = TASKS[task].model_config(**{k: _tuples(v) for k, v in data["model"].items()})
    diffusion = DiffusionConfig(**data.get("diffusion", {}))
    rest = {k: v for k, v in data.items() if k not in ("model", "diffusion", "task")}
    return TrainConfig(model=model, diffusion=diffusion, task=task, **rest)


def export(params, config, out_dir: Path, model_card: dict) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(flatten(params["params"]), str(out_dir / "model.safetensors"))
    (out_dir / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2))
    (out_dir / "model_card.json").write_text(json.dumps(model_card, indent=2))
    return out_dir


def load_model(path: Path | str):
    """(model, params, config, model_card) from an exported folder or a training work dir;
    the model is the module of ``config.task``."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        if (path / "model.safetensors").exists():
            config = config_from_dict(json.loads((path / "config.json").read_text()))
            params = {"params": unflatten(load_file(str(path / "model.safetensors")))}
            card_path = path / "model_card.json"
            card = json.loads(card_path.read_text()) if card_path.exists() else {}
        elif (path / "checkpoints").is_dir():
            params, config, _ = _load_workdir(path)
            card = {}
        else:
            raise CheckpointError(f"{path} holds neither model.safetensors nor a checkpoints/ folder")
    except CheckpointError:
        raise
    except Exception as error:  # noqa: BLE001 - any decoding failure means a corrupt checkpoint
        raise CheckpointError(
            f"corrupt checkpoint {path}: {type(error).__name__}: {one_line(error)}"
        ) from error
    if config.task == "diffusion":
        try:
            register_properties(config.model)  # a user's own property: its unit, from the config
        except ValueError as error:
            raise CheckpointError(f"{path}: {one_line(error)}") from None
    return TASKS[config.task].make_model(config.model), params, config, card


def _load_workdir(workdir: Path):
    config = config_from_dict(json.loads((workdir / "config.json").read_text()))
    manager = ocp.CheckpointManager((workdir / "checkpoints").absolute())
    step = manager.latest_step()
    if step is None:
        raise CheckpointError(f"no saved step in {workdir}/checkpoints")
    restored = manager.restore(step)
    state = restored if isinstance(restored, dict) else restored.__dict__
    return {"params": state["ema_params"]["params"]}, config, step


def training_summary(workdir: Path, up_to_step: int | None = None) -> dict:
    """Steps, wall time, throughput and last losses read from a work dir's metrics.csv
    (only rows up to ``up_to_step``, the exported checkpoint's step)."""
    rows = list(csv.DictReader(open(Path(workdir) / "metrics.csv")))
    if up_to_step is not None:
        rows = [r for r in rows if int(r["step"]) <= up_to_step]
    train = [r for r in rows if r["split"] == "train"]
    held = [r for r in rows if r["split"] != "train"]
    summary = {
        "steps": int(train[-1]["step"]) if train else 0,
        "wall_seconds": round(float(train[-1]["wall_s"]), 1) if train else None,
        "mean_crystals_per_second": round(float(np.mean([float(r["crystals_per_s"]) for r in train[1:]])), 1)
        if len(train) > 1
        else None,
        "final_train_loss_mean_last_10_logs": round(
            float(np.mean([float(r["loss"]) for r in train[-10:]])), 4
        )
        if train
        else None,
    }
    if held:
        summary["selection_split"] = held[-1]["split"]
        summary["selection_losses"] = {r["step"]: round(float(r["loss"]), 4) for r in held}
        mae_columns = [c for c in held[-1] if c.startswith("mae_") and held[-1][c]]  # property task
        if mae_columns:
            summary["selection_mae"] = {
                r["step"]: {c[4:]: round(float(r[c]), 4) for c in mae_columns} for r in held
            }
    return summary


def _data_description(config) -> dict:
    """What a run trained and selected on: MP-20's policy splits, or the user's own files."""
    if config.train_split == "train" and config.eval_split == "holdout":
        return {
            "dataset": "MP-20 (CDVAE split), ../shared/data/mp_20",
            "training": "train_partial.csv.gz + val.csv.gz rows 1001-9047 (28,218 crystals)",
            "selection": "val.csv.gz rows 1-1000 (holdout)",
            "test": "never used for training or selection",
        }
    return {"training": str(config.train_split), "selection": str(config.eval_split)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m unimdm_jax.checkpoint")
    sub = parser.add_subparsers(dest="command", required=True)
    exp = sub.add_parser(
        "export", help="EMA parameters of a training work dir -> safetensors folder + model card"
    )
    exp.add_argument("--workdir", required=True)
    exp.add_argument("--out", required=True)
    exp.add_argument("--command", default=None, help="the training command, for the model card")
    exp.add_argument(
        "--metrics", nargs="*", default=[], help="benchmark result JSON files to copy into the card"
    )
    args = parser.parse_args(argv)
    try:
        params, config, step = _load_workdir(Path(args.workdir))
    except Exception as error:  # noqa: BLE001
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 1
    card = {
        "name": Path(args.out).name,
        "task": config.task,
        "model": dataclasses.asdict(config.model),
        **({"diffusion": dataclasses.asdict(config.diffusion)} if config.task == "diffusion" else {}),
        "data": _data_description(config),
        "training": {
            "command": args.command
            or f"python -m unimdm_jax.train --config <config> --workdir {args.workdir}",
            "hardware": provenance.hardware_summary(),
            **training_summary(Path(args.workdir), step),
        },
        "metrics": {Path(m).stem: json.loads(Path(m).read_text()) for m in args.metrics},
    }
    state_file = Path(args.workdir) / TRAIN_STATE_FILE
    if state_file.exists():  # resumable segments: every segment trained so far, this one last
        card["training"]["segments"] = train_state_segments(state_file)
    if config.init_from:  # a warm start: keep the lineage (what the starting weights were)
        source = Path(config.init_from)
        source_card = (
            json.loads((source / "model_card.json").read_text())
            if (source / "model_card.json").is_file()
            else {}
        )
        card["training"]["initialised_from"] = {
            "path": str(config.init_from),
            "name": source_card.get("name"),
            "model": source_card.get("model"),
            "training": source_card.get("training"),
        }
    export(params, config, Path(args.out), card)
    size = (Path(args.out) / "model.safetensors").stat().st_size
    print(f"exported {args.out} ({size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
