"""Budget-fair study of Crystal DiT variants: the same wall-clock training budget for each.

    python benchmarks/dit_study.py --budget-minutes 12 [--only a_today b_reference ...] [--eval-limit 200]
        [--stage train|evaluate|both] [--rates NAME=STEPS_PER_S ...] [--rate-only] [--table]

Every candidate is ``configs/dit_mp20_cpu.py`` with a different network (``CANDIDATES``),
trained from scratch on the policy's training split with the same data order, the same
schedule shape (warmup 300 steps, cosine decay to the end) and the same number of seconds:
the candidate's steps per second are measured first (20 timed steps after compilation), and
its total steps set to budget x rate. Then one sample per crystal of the first
``--eval-limit`` holdout crystals (val rows 1..N; never test) with the same sampler and seed,
scored with the paper's StructureMatcher. One results file per candidate in
``benchmarks/results/dit_study/``; ``--table`` prints them as one table.

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

# name -> (ModelConfig overrides on configs/dit_mp20_cpu.py, what it tests)
CANDIDATES = {
    "a_today": ({}, "the shipped network: one-layer message on frequencies 1..16, attention block"),
    "b_reference_edge": ({"message_layers": 2, "num_frequencies": 128, "first_frequency": 0},
                         "the reference's edge function: two-layer MLP on [h_i, h_j, k, psi_FT(0..127)], attention"),
    "b_reference_edge_no_attention": ({"message_layers": 2, "num_frequencies": 128, "first_frequency": 0,
                                       "attention": False},
                                      "reference edge function, no attention block (property in the global token)"),
    "c_two_layer_f32": ({"message_layers": 2, "num_frequencies": 32},
                        "today's network with a second nonlinearity and frequencies 1..32"),
    "c_two_layer_f64": ({"message_layers": 2, "num_frequencies": 64},
                        "today's network with a second nonlinearity and frequencies 1..64"),
    "d_wide_two_layer_f32": ({"message_layers": 2, "num_frequencies": 32, "hidden": 192},
                             "c at hidden 192"),
    "d_deep_two_layer_f32": ({"message_layers": 2, "num_frequencies": 32, "num_layers": 6},
                             "c with 6 layers"),
}


def candidate_config(name: str):
    from unimdm_jax.train import load_config

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
    (workdir / "study.json").write_text(json.dumps({"rate": rate, "steps": total, "budget_seconds": budget_s,
                                                     "train_seconds": round(time.perf_counter() - started, 1)}))


def record_training(name: str) -> dict:
    """Write the training half of a candidate's row (steps, rate, holdout losses) to
    ``results/dit_study/<name>_training.json``, from its work dir."""
    import csv

    workdir = ROOT / "workdirs" / "study" / name
    trained = json.loads((workdir / "study.json").read_text())
    held = [r for r in csv.DictReader(open(workdir / "metrics.csv")) if r["split"] == "holdout"][-1]
    row = {"candidate": name, "what": CANDIDATES[name][1], "model": dataclasses.asdict(candidate_config(name).model),
           **trained, "epochs": round(trained["steps"] * 64 / 28218, 2),
           "holdout_loss": {k: round(float(held[k]), 4) for k in ("loss", "coord_loss", "lattice_loss")},
           "holdout": "val.csv.gz rows 1-1000, the trainer's 16 fixed batches"}
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _common import write_result

    write_result(RESULTS / f"{name}_training.json", row)
    return row


def run_candidate(name: str, eval_limit: int, data: Path) -> dict:
    """Evaluate a trained candidate on the first ``eval_limit`` holdout rows; write its row."""
    from unimdm_jax.checkpoint import training_summary

    workdir = ROOT / "workdirs" / "study" / name
    trained = json.loads((workdir / "study.json").read_text())
    rate, total, budget_s, train_seconds = (trained[k] for k in ("rate", "steps", "budget_seconds", "train_seconds"))
    config = candidate_config(name)
    out = RESULTS / f"{name}_holdout{eval_limit}.json"
    command = [sys.executable, "-m", "unimdm_jax.evaluate", "--checkpoint", str(workdir), "--csv",
               str(data / "val.csv.gz"), "--limit", str(eval_limit), "--out", str(out)]
    subprocess.run(command, check=True, cwd=ROOT)
    evaluation = json.loads(out.read_text())
    summary = training_summary(workdir)
    import jax
    import numpy as np

    from unimdm_jax.checkpoint import load_model

    _, params, _, _ = load_model(workdir)
    row = {
        "candidate": name,
        "what": CANDIDATES[name][1],
        "model": dataclasses.asdict(config.model),
        "parameters": int(sum(np.size(x) for x in jax.tree_util.tree_leaves(params))),
        "budget_seconds": budget_s,
        "measured_steps_per_second": round(rate, 3),
        "steps": total,
        "epochs": round(total * config.batch_size / 28218, 2),
        "train_seconds": round(train_seconds, 1),
        "train_crystals_per_second": summary["mean_crystals_per_second"],
        "holdout_loss": (list(summary.get("selection_losses", {}).values()) or [None])[-1],
        "final_train_loss_mean_last_10_logs": summary["final_train_loss_mean_last_10_logs"],
        "holdout_rows": f"val.csv.gz rows 1-{eval_limit}",
        "match_rate": evaluation["match_rate"],
        "match_rate_se": (evaluation["match_rate"] * (1 - evaluation["match_rate"]) / evaluation["n"]) ** 0.5,
        "rmse": evaluation["rmse"],
        "sampling_seconds_per_crystal": evaluation["sampling"]["seconds_per_crystal"],
        "evaluation_file": str(out.relative_to(ROOT)),
    }
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _common import write_result

    write_result(RESULTS / f"{name}.json", row)
    return row


def print_table() -> None:
    """Markdown table of the candidates: trained ones (study.json) with their holdout loss, and
    the match rate where a holdout evaluation exists."""
    from unimdm_jax.checkpoint import training_summary

    print("| candidate | steps/s | steps (epochs) | holdout loss | holdout match (SE) | RMSE | s/crystal sampling |")
    print("|---|---|---|---|---|---|---|")
    for name in CANDIDATES:
        workdir = ROOT / "workdirs" / "study" / name
        row_file = RESULTS / f"{name}.json"
        if row_file.exists():
            r = json.loads(row_file.read_text())
            print(f"| {name} | {r['measured_steps_per_second']:.2f} | {r['steps']} ({r['epochs']}) | "
                  f"{r['holdout_loss']:.4f} | {r['match_rate']:.3f} ({r['match_rate_se']:.3f}) | {r['rmse']:.4f} | "
                  f"{r['sampling_seconds_per_crystal']:.2f} |")
        elif (workdir / "study.json").exists():
            trained = json.loads((workdir / "study.json").read_text())
            losses = training_summary(workdir).get("selection_losses", {})
            loss = list(losses.values())[-1] if losses else float("nan")
            print(f"| {name} | {trained['rate']:.2f} | {trained['steps']} ({trained['steps'] * 64 / 28218:.2f}) | "
                  f"{loss:.4f} | not evaluated | | |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--budget-minutes", type=float, default=45.0)
    parser.add_argument("--only", nargs="*", default=None, help=f"candidates (default all): {', '.join(CANDIDATES)}")
    parser.add_argument("--eval-limit", type=int, default=200)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "mp_20"))
    parser.add_argument("--table", action="store_true", help="print the table of the results so far and exit")
    parser.add_argument("--rate-only", action="store_true", help="print each candidate's steps per second and exit")
    parser.add_argument("--rates", nargs="*", default=[], metavar="NAME=STEPS_PER_S",
                        help="steps per second measured earlier (alone on this machine) instead of measuring again")
    parser.add_argument("--stage", choices=("train", "evaluate", "both", "record"), default="both",
                        help="record: write the training rows of candidates already trained")
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


if __name__ == "__main__":
    main()
