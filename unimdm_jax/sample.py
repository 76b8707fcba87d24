"""Generate crystal structures from a composition and a target property.

    python -m unimdm_jax.sample --formula LiFePO4 --band-gap 3.0 -n 8 --out results/
    python -m unimdm_jax.sample --symmetry record.json -n 4 --out results/     # skip the language model
    python -m unimdm_jax.sample --formula Li4Fe4P4O16 --band-gap 3.0 --guidance 1.0 --out results/
    python -m unimdm_jax.sample --formula LiFePO4 --band-gap 2.5:3.5 -n 8 --out results/   # a range
    python -m unimdm_jax.sample --targets targets.csv -n 4 --out screen/ [--resume]      # many targets

The symmetry predictor (``llm_torch``, embedded small GLM-4 by default) proposes its top-k JSON
symmetry schema records; the Crystal DiT (embedded ``dit_mp20_cpu`` by default) samples ``-n``
structures spread over them (best hypothesis first); duplicates are merged with
StructureMatcher; the property oracle (when packaged) predicts each structure's properties.
A target range ``lo:hi`` draws each structure's condition inside it and judges the oracle's
prediction against it (``in_range_<property>`` in the summary).
``--out`` receives one CIF and one extended XYZ per distinct structure, ``summary.json`` and ``summary.csv``
(formula, space group, Wyckoff assignment, lattice, predicted property and its distance to
the target, which hypothesis produced it) and ``symmetry.jsonl`` (the hypotheses).

Bad input (unknown element, malformed formula, a composition no space group admits, a target
outside the trained range without ``--allow-extrapolation``, an invalid symmetry file, a
non-empty output folder without ``--overwrite``, a missing or corrupt checkpoint) prints one
line ``error: ...`` and exits 1; nothing is written. Everything runs offline.

This module is only the command line: the work is ``unimdm_jax.generation.generate``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from unimdm_jax.errors import one_line


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m unimdm_jax.sample",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--formula", help="reduced formula (LiFePO4) or conventional-cell counts (Li4Fe4P4O16)"
    )
    source.add_argument(
        "--symmetry", help="JSON/JSONL file of symmetry schema records (skips the language model)"
    )
    source.add_argument(
        "--targets",
        help="CSV of many targets (columns formula, band_gap or formation_energy as a value or lo:hi, "
        "optional n, top_k, id): one folder per row under OUT/rows and one summary (unimdm_jax.screening)",
    )
    parser.add_argument(
        "--band-gap",
        help="target band gap, eV: a value (3.0) or a range lo:hi (2.5:3.5, drawn per structure)",
    )
    parser.add_argument(
        "--formation-energy",
        help="target formation energy, eV/atom: a value (-1.2) or a range lo:hi (-2.5:-2.0)",
    )
    parser.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="target of a property of your own (a value or lo:hi), e.g. density=3.0, for a "
        "--dit-checkpoint and --symmetry-model trained on it (notebooks/05_your_own_data.ipynb)",
    )
    parser.add_argument(
        "-n", "--num-structures", type=int, default=8, help="structures to sample in all (default 8)"
    )
    parser.add_argument(
        "--top-k", type=int, default=3, help="symmetry hypotheses of the language model (default 3)"
    )
    parser.add_argument(
        "--out", required=True, help="output folder (must not exist or be empty, see --overwrite)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    parser.add_argument(
        "--resume", action="store_true", help="with --targets: skip the rows already written in OUT"
    )
    parser.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="with --targets: distribute the rows over a Ray cluster (auto: the running cluster, an "
        "address such as ray://head:10001, local: start one here); OUT must be on a shared file system",
    )
    parser.add_argument("--ray-workers", type=int, help="with --ray: actors (default: one per CPU)")
    parser.add_argument(
        "--rows-per-batch",
        type=int,
        default=16,
        help="with --targets: rows whose structures are sampled together (default 16)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--device",
        default="cpu",
        choices=("cpu", "gpu", "cuda", "npu", "auto"),
        help="cpu (default); gpu/cuda: JAX and torch on the GPU; npu: torch-npu for the language model",
    )
    parser.add_argument(
        "--guidance", type=float, default=0.0, help="classifier-free guidance scale w (0: plain conditional)"
    )
    parser.add_argument(
        "--oracle-guidance",
        type=float,
        default=0.0,
        help="classifier guidance scale with the property oracle's gradient (0: off)",
    )
    parser.add_argument(
        "--oracle-sigma", type=float, default=0.5, help="width of the oracle likelihood (property units)"
    )
    parser.add_argument(
        "--oracle-unbounded",
        action="store_true",
        help="oracle guidance without the safeguards (by default it keeps the cell volume and moves "
        "the lattice noise and each orbit's score by at most one norm per step)",
    )
    parser.add_argument(
        "--unconditional", action="store_true", help="ignore the target in the Crystal DiT (null condition)"
    )
    parser.add_argument("--step-lr", type=float, default=1e-5, help="Langevin corrector step size")
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="sampling steps, the schedules re-spaced (default: the trained 1000); 250 matched as often as "
        "1000 on the holdout, 4x faster (benchmarks/README.md, Sampling steps)",
    )
    parser.add_argument(
        "--composition-mode",
        choices=("auto", "cell", "reduced"),
        default="auto",
        help="auto: counts with a common divisor are cell counts, else a reduced formula",
    )
    parser.add_argument(
        "--allow-extrapolation", action="store_true", help="sample targets outside the trained range"
    )
    parser.add_argument(
        "--relax",
        action="store_true",
        help="relax every structure with CHGNet (positions and cell, space group kept; the relax extra): "
        "raw and relaxed CIFs, energy, volume change, steps, convergence in the summary",
    )
    parser.add_argument("--relax-fmax", type=float, default=0.05, help="force tolerance, eV/A (default 0.05)")
    parser.add_argument("--relax-steps", type=int, default=300, help="optimiser step limit (default 300)")
    parser.add_argument(
        "--rank",
        choices=("energy", "property", "score", "none"),
        default=None,
        help="order of the output: energy (CHGNet energy per atom; within 0.03 eV/atom of the lowest, "
        "closest oracle property first), property (closest to the target), score (symmetry "
        "hypothesis), none (as sampled). Default: energy with --relax, else none",
    )
    parser.add_argument("--no-dedup", action="store_true", help="keep duplicate structures")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--dit-checkpoint",
        help="Crystal DiT folder (default: the embedded model for the target: dit_mp20_cpu for band gap, "
        "dit_mp20_formation_cpu for formation energy)",
    )
    parser.add_argument(
        "--symmetry-model", help="symmetry predictor folder (default: the embedded small GLM-4)"
    )
    parser.add_argument("--oracle-checkpoint", help="property oracle folder (default: the embedded one)")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    return parser.parse_args(_attach_negative_values(sys.argv[1:] if argv is None else list(argv)))


TARGET_FLAGS = ("--band-gap", "--formation-energy")


def _attach_negative_values(argv: list[str]) -> list[str]:
    """``--formation-energy -2.5:-2.0`` as ``--formation-energy=-2.5:-2.0``: argparse would take a
    value that starts with '-' and is not a plain number for an option."""
    out, i = [], 0
    while i < len(argv):
        if argv[i] in TARGET_FLAGS and i + 1 < len(argv) and argv[i + 1].startswith("-"):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def _select_jax_platform(device: str) -> None:
    """Must run before JAX is imported."""
    if device == "cpu" or device == "npu":
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    elif device in ("gpu", "cuda"):
        os.environ.setdefault("JAX_PLATFORMS", "cuda")


def main(argv=None) -> int:
    args = parse_args(argv)
    _select_jax_platform(args.device)
    # after the platform is chosen (JAX reads it on import); also keeps --help fast
    from unimdm_jax.generation import GenerationError, Options, check_output_dir, generate

    log = (lambda message: None) if args.quiet else (lambda message: print(message, file=sys.stderr))
    options = Options(
        seed=args.seed,
        guidance_scale=args.guidance,
        step_lr=args.step_lr,
        steps=args.steps,
        dit_checkpoint=args.dit_checkpoint,
        symmetry_model=args.symmetry_model,
        oracle_checkpoint=args.oracle_checkpoint,
        composition_mode=args.composition_mode,
        device=args.device,
        unconditional=args.unconditional,
        allow_extrapolation=args.allow_extrapolation,
        deduplicate=not args.no_dedup,
        batch_size=args.batch_size,
        oracle_guidance=args.oracle_guidance,
        oracle_sigma=args.oracle_sigma,
        oracle_safeguards=not args.oracle_unbounded,
        relax=args.relax,
        rank=args.rank,
        relax_fmax=args.relax_fmax,
        relax_steps=args.relax_steps,
    )
    if args.targets:
        # only --targets needs it; it imports generation (JAX), so not before the platform is chosen
        from unimdm_jax.screening import screen

        if args.band_gap is not None or args.formation_energy is not None or args.target:
            print("error: with --targets the targets come from the file's columns", file=sys.stderr)
            return 1
        try:
            screen(
                args.targets,
                args.out,
                options=options,
                n=args.num_structures,
                top_k=args.top_k,
                resume=args.resume,
                overwrite=args.overwrite,
                rows_per_batch=args.rows_per_batch,
                ray_address=args.ray,
                ray_workers=args.ray_workers,
                progress=not args.quiet,
                log=log,
            )
        except GenerationError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        return 0
    try:
        own = {}
        for item in args.target:
            name, sep, value = item.partition("=")
            if not sep or not name.strip() or not value.strip():
                raise GenerationError(f"--target must be NAME=VALUE (e.g. density=3.0), got {item!r}")
            own[name.strip()] = value.strip()
        check_output_dir(args.out, args.overwrite)  # before minutes of sampling
        result = generate(
            args.formula,
            band_gap=args.band_gap,
            formation_energy=args.formation_energy,
            properties=own or None,
            n=args.num_structures,
            top_k=args.top_k,
            symmetry=args.symmetry,
            progress=not args.quiet,
            log=log,
            **dataclasses.asdict(options),
        )
        out = result.write(args.out, overwrite=args.overwrite)
    except GenerationError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except RuntimeError as error:  # e.g. a requested accelerator that JAX/torch cannot find
        message = one_line(error)
        print(f"error: {message}", file=sys.stderr)
        return 1
    for warning in result.warnings:
        log(f"warning: {warning}")
    log(
        f"{result.num_sampled} sampled, {len(result.crystals)} distinct -> {out}/ "
        f"({result.settings['seconds']} s)"
    )
    for row in (c.summary() for c in result.crystals):
        predicted = " ".join(f"{k[10:]}={row[k]:.2f}" for k in row if k.startswith("predicted_"))
        log(
            f"  {row['cell_formula']:<16} {row['space_group_symbol']:<10} a={row['a']:.2f} b={row['b']:.2f} "
            f"c={row['c']:.2f} V={row['volume']:.1f} {predicted}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
