"""Budget-fair study of Crystal DiT variants: the same wall-clock training budget for each.

    python benchmarks/dit_study.py --budget-minutes 12 [--only a_today b_reference ...] [--eval-limit 200]
        [--stage train|evaluate|both] [--rates NAME=STEPS_PER_S ...] [--rate-only] [--table]

Every candidate is ``configs/dit_mp20_cpu.py`` with a different network (``CANDIDATES``),
trained from scratch on the policy's training split with the same data order, the same
schedule shape (warmup 300 steps, cosine decay to the end) and the same number of seconds:
the candidate's steps per second are measured first (``train.steps_per_second``: 30 timed steps,
every padded shape compiled beforehand), and its total steps set to budget x rate. Then one
sample per crystal of the first ``--eval-limit`` holdout crystals (val rows 1..N; never test)
with the same sampler and seed, scored with the paper's StructureMatcher. Results files in
``benchmarks/results/dit_study/``: ``<name>_training.json`` (steps, rate, holdout losses),
``<name>_holdout<N>.json`` (the evaluation) and ``<name>.json`` (both, one row); ``--table``
prints the rows as one table.

Time: budget + ~1 min of calibration and compilation per candidate, plus the evaluation
(about 4 s per crystal at T=1000 for the CPU default, more for wider edge functions).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "dit_study"
TRAIN_CRYSTALS = 28_218  # the policy's training split (train_partial + val rows 1,001-9,047)

# name -> (ModelConfig overrides on configs/dit_mp20_cpu.py, what it tests)
CANDIDATES = {
    "a_today": ({}, "the shipped network: one-layer message on frequencies 1..16, attention block"),
    "b_reference_edge": (
        {"message_layers": 2, "num_frequencies": 128, "first_frequency": 0},
        "the reference's edge function: two-layer MLP on [h_i, h_j, k, psi_FT(0..127)], attention",
    ),
    "b_reference_edge_no_attention": (
        {"message_layers": 2, "num_frequencies": 128, "first_frequency": 0, "attention": False},
        "reference edge function, no attention block (property in the global token)",
    ),
    "c_two_layer_f32": (
        {"message_layers": 2, "num_frequencies": 32},
        "today's network with a second nonlinearity and frequencies 1..32",
    ),
    "c_two_layer_f64": (
        {"message_layers": 2, "num_frequencies": 64},
        "today's network with a second nonlinearity and frequencies 1..64",
    ),
    "d_wide_two_layer_f32": ({"message_layers": 2, "num_frequencies": 32, "hidden": 192}, "c at hidden 192"),
    "d_deep_two_layer_f32": (
        {"message_layers": 2, "num_frequencies": 32, "num_layers": 6},
        "c with 6 layers",
    ),
}


def candidate_config(name: str):
    from unimdm_jax.config import load_config

    base = load_config(ROOT / "configs" / "dit_mp20_cpu.py")
    overrides, _ = CANDIDATES[name]
    return dataclasses.replace(base, model=dataclasses.replace(base.model, **overrides), eval_every=10**9)


def steps_per_second(config) -> float:
    from unimdm_jax.data.preprocess import load_policy_split
    from unimdm_jax.train import steps_per_second as measure

    return measure(config, load_policy_split("train", progress=False)[0])


def train_candidate(name: str, budget_s: float, rate: float | None = None) -> None:
    """Train one candidate for ``budget_s`` seconds' worth of steps at its measured rate
    (``rate``: steps per second measured earlier on this machine, alone)."""
    from unimdm_jax.train import train

    config = candidate_config(name)
    rate = rate or steps_per_second(config)
    total = max(int(budget_s * rate), config.warmup_steps + 1)
    config = dataclasses.replace(config, total_steps=total, checkpoint_every=max(total // 4, 1))
    workdir = ROOT / "workdirs" / "study" / name
    started = time.perf_counter()
    train(config, workdir, progress=False)
    (workdir / "study.json").write_text(
        json.dumps(
            {
                "rate": rate,
                "steps": total,
                "budget_seconds": budget_s,
                "train_seconds": round(time.perf_counter() - started, 1),
            }
        )
    )


def record_training(name: str) -> dict:
    """Write the training half of a candidate's row (steps, rate, holdout losses) to
    ``results/dit_study/<name>_training.json``, from its work dir."""
    import csv

    workdir = ROOT / "workdirs" / "study" / name
    trained = json.loads((workdir / "study.json").read_text())
    held = [r for r in csv.DictReader(open(workdir / "metrics.csv")) if r["split"] == "holdout"][-1]
    config = candidate_config(name)
    row = {
        "candidate": name,
        "what": CANDIDATES[name][1],
        "model": dataclasses.asdict(config.model),
        **trained,
        "epochs": round(trained["steps"] * config.batch_size / TRAIN_CRYSTALS, 2),
        "holdout_loss": {k: round(float(held[k]), 4) for k in ("loss", "coord_loss", "lattice_loss")},
        "holdout": "val.csv.gz rows 1-1000, the trainer's 16 fixed batches",
    }
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _common import write_result

    write_result(RESULTS / f"{name}_training.json", row)
    return row


def run_candidate(name: str, eval_limit: int, data: Path) -> dict:
    """Evaluate a trained candidate on the first ``eval_limit`` holdout rows, then write its row."""
    out = RESULTS / f"{name}_holdout{eval_limit}.json"
    command = [
        sys.executable,
        "-m",
        "unimdm_jax.evaluate",
        "--checkpoint",
        str(ROOT / "workdirs" / "study" / name),
        "--csv",
        str(data / "val.csv.gz"),
        "--limit",
        str(eval_limit),
        "--out",
        str(out),
    ]
    subprocess.run(command, check=True, cwd=ROOT)
    return combine(name, eval_limit)


def combine(name: str, eval_limit: int) -> dict:
    """``results/dit_study/<name>.json``: the training row plus its holdout evaluation file."""
    import jax
    import numpy as np

    from unimdm_jax.checkpoint import load_model

    out = RESULTS / f"{name}_holdout{eval_limit}.json"
    evaluation = json.loads(out.read_text())
    _, params, _, _ = load_model(ROOT / "workdirs" / "study" / name)
    training = {
        k: v
        for k, v in json.loads((RESULTS / f"{name}_training.json").read_text()).items()
        if k not in ("command", "machine", "git_commit", "date")
    }
    m, n = evaluation["match_rate"], evaluation["n"]
    row = {
        **training,
        "parameters": int(sum(np.size(x) for x in jax.tree_util.tree_leaves(params))),
        "holdout_rows": f"val.csv.gz rows 1-{eval_limit}",
        "match_rate": m,
        "match_rate_se": (m * (1 - m) / n) ** 0.5,
        "rmse": evaluation["rmse"],
        "sampling_seconds_per_crystal": evaluation["sampling"]["seconds_per_crystal"],
        "evaluation_file": str(out.relative_to(ROOT)),
    }
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _common import write_result

    write_result(RESULTS / f"{name}.json", row)
    return row


def print_table() -> None:
    """Markdown table of the results files: every trained candidate, with its holdout match
    where it was evaluated."""
    print(
        "| candidate | steps/s | steps (epochs) | holdout loss: total / coords / lattice "
        "| holdout match (SE) | RMSE "
        "| s/crystal sampling |"
    )
    print("|---|---|---|---|---|---|---|")
    for name in CANDIDATES:
        training_file, row_file = RESULTS / f"{name}_training.json", RESULTS / f"{name}.json"
        if not training_file.exists():
            continue
        r = json.loads((row_file if row_file.exists() else training_file).read_text())
        loss = " / ".join(f"{r['holdout_loss'][k]:.3f}" for k in ("loss", "coord_loss", "lattice_loss"))
        evaluated = (
            (
                f"{r['match_rate']:.3f} ({r['match_rate_se']:.3f}) | {r['rmse']:.4f} | "
                f"{r['sampling_seconds_per_crystal']:.2f}"
            )
            if row_file.exists()
            else "not evaluated | |"
        )
        print(f"| {name} | {r['rate']:.2f} | {r['steps']} ({r['epochs']}) | {loss} | {evaluated} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--budget-minutes", type=float, default=45.0)
    parser.add_argument(
        "--only", nargs="*", default=None, help=f"candidates (default all): {', '.join(CANDIDATES)}"
    )
    parser.add_argument("--eval-limit", type=int, default=200)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "mp_20"))
    parser.add_argument("--table", action="store_true", help="print the table of the results so far and exit")
    parser.add_argument(
        "--rate-only", action="store_true", help="print each candidate's steps per second and exit"
    )
    parser.add_argument(
        "--rates",
        nargs="*",
        default=[],
        metavar="NAME=STEPS_PER_S",
        help="steps per second measured earlier (alone on this machine) instead of measuring again",
    )
    parser.add_argument(
        "--stage",
        choices=("train", "evaluate", "both", "record", "combine"),
        default="both",
        help="record: write the training rows of candidates already trained; combine: rebuild the "
        "rows from the training rows and existing evaluation files",
    )
    args = parser.parse_args()
    if args.table:
        print_table()
        return
    names = args.only or list(CANDIDATES)
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown:
        raise SystemExit(f"error: unknown candidate {unknown[0]!r}")
    rates = {k: float(v) for k, v in (item.split("=") for item in args.rates)}
    for name in names:
        if args.rate_only:
            print(name, round(steps_per_second(candidate_config(name)), 3), flush=True)
            continue
        if args.stage in ("train", "both"):
            train_candidate(name, args.budget_minutes * 60, rates.get(name))
        if args.stage in ("train", "both", "record"):
            record_training(name)
        if args.stage in ("evaluate", "both"):
            run_candidate(name, args.eval_limit, Path(args.data))
        if args.stage == "combine":
            combine(name, args.eval_limit)


if __name__ == "__main__":
    main()
