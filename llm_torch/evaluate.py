"""Evaluate symmetry predictors on MP-20 rows: the LM and two baselines in one table.

    python -m llm_torch.evaluate --csv ../shared/data/mp_20/test.csv.gz --limit 500 --out results.json
    python -m llm_torch.evaluate --csv ../shared/data/mp_20/test.csv.gz --limit 500 \\
        --model llm_torch/checkpoints/small_glm4_bg

A long evaluation can run in shards (on several cores or machines, or over several days) and be
combined exactly, since every metric is a per-row (``repair_rate``: per-hypothesis) average:

    python -m llm_torch.evaluate --csv test.csv.gz --limit 500 --out a.json
    python -m llm_torch.evaluate --csv test.csv.gz --offset 500 --limit 500 --out b.json
    python -m llm_torch.evaluate --merge a.json b.json --out rows_1_1000.json

``--predictions rows.jsonl`` also writes the language model's per-row records (truth, every scored
hypothesis with its log-probability and ranking score), so a ranking change can be studied offline
and errors read row by row.

Each row of the CSV is symmetrized (``unimdm_jax.data``; the preprocessing cache is used when
it holds the file) into its true record; the predictor gets the conventional-cell counts
(``cell`` composition mode) and the row's own property value (``--property``, default band
gap) and returns up to ``--top-k`` hypotheses. Metrics (per row, averaged):

* ``rouge1`` / ``rouge2`` / ``rougeL``: ROUGE-N and ROUGE-L F1 between the top-1 answer text
  and the reference answer (format of :mod:`llm_torch.prompts`), on whitespace tokens, as
  defined by Lin (2004), "ROUGE: A Package for Automatic Evaluation of Summaries", Text
  Summarization Branches Out (ACL workshop): ROUGE-N recall = clipped n-gram matches / n-grams
  of the reference, precision = matches / n-grams of the candidate, F1 their harmonic mean;
  ROUGE-L uses the longest common subsequence (LCS): R = LCS/|reference|, P = LCS/|candidate|,
  F1 (beta = 1). Note the answer contains the group's Wyckoff position list, so a right space
  group alone already scores high.
* ``sg_top1`` / ``sg_top5``: the true space group is the first / among the first 5 hypotheses.
* ``wyckoff_exact``: top-1 has the true group and the same multiset of (element, letter).
* ``validity``: the top-1 answer as written by the predictor is a valid record (before repair).
* ``repair_rate``: share of all hypotheses that needed :func:`llm_torch.constraints.repair`.

Baselines (no LM; fitted on the training split, ``--train-split`` or ``--train-csv``):

* ``most_frequent``: the training set's space groups by frequency, skipping groups that admit no
  assignment of the counts; assignment = the repair solver's minimum-cost fill with per-group
  letter costs ``1 - log p(letter | group)`` from training orbit frequencies.
* ``nearest_composition``: training crystals ordered by L1 distance between element-fraction
  vectors (ties: closest property value); their distinct, feasible groups in that order; the
  assignment is the nearest neighbour's orbits mapped onto the query elements (shared elements
  kept, others paired by fraction rank) and repaired to the query counts (its ``validity`` /
  ``repair_rate`` say how often the neighbour's assignment transfers unchanged).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unimdm_jax import provenance
from unimdm_jax.errors import one_line
from unimdm_jax.provenance import file_sha256
from unimdm_jax.schema import wyckoff_positions

from . import dataset  # module attribute access: the tests replace dataset.csv_records
from .constraints import CompositionSpec, is_feasible, repair
from .neighbours import CompositionNeighbours
from .predict import InputError, Predictor, add_ranking_arguments, default_model_dir, ranking_from_args
from .prompts import canonical_property, format_output

__all__ = [
    "Guess",
    "MostFrequentBaseline",
    "NearestCompositionBaseline",
    "evaluate_model_on_split",
    "evaluate_predictor",
    "letter_prior",
    "main",
    "merge_results",
    "model_identity",
    "record_spec",
    "rouge_l",
    "rouge_n",
]


# ============================================================================ ROUGE


def _ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def _f1(matches: float, n_candidate: int, n_reference: int) -> dict[str, float]:
    precision = matches / n_candidate if n_candidate else 0.0
    recall = matches / n_reference if n_reference else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def rouge_n(candidate: str, reference: str, n: int = 1) -> dict[str, float]:
    """ROUGE-N (Lin 2004) on whitespace tokens: clipped n-gram overlap -> precision, recall, F1."""
    cand, ref = _ngrams(candidate.split(), n), _ngrams(reference.split(), n)
    matches = sum((cand & ref).values())
    return _f1(matches, sum(cand.values()), sum(ref.values()))


def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    if not a or not b:
        return 0
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if x == y else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l(candidate: str, reference: str) -> dict[str, float]:
    """ROUGE-L (Lin 2004, sentence level, beta = 1) on whitespace tokens, via the LCS length."""
    cand, ref = candidate.split(), reference.split()
    return _f1(_lcs(cand, ref), len(cand), len(ref))


# ============================================================================ baselines


@dataclass
class Guess:
    space_group: int
    assignment: tuple[tuple[str, str], ...]
    raw_valid: bool = True
    repaired: bool = False
    text: str | None = None
    logprob: float | None = None  # log p(answer | prompt), for language-model guesses
    score: float | None = None  # the ranking score


def letter_prior(records) -> dict[int, dict[str, float]]:
    """Per-group orbit cost ``1 - log p(letter | group)`` (add-one smoothed) from training records."""

    counts: dict[int, Counter] = defaultdict(Counter)
    for r in records:
        for w in r.wyckoff:
            counts[r.space_group.number][w.letter] += 1
    prior = {}
    for sg, c in counts.items():
        letters = [p.letter for p in wyckoff_positions(sg)]
        total = sum(c.values()) + len(letters)
        prior[sg] = {letter: 1.0 - math.log((c[letter] + 1) / total) for letter in letters}
    return prior


def record_spec(record) -> CompositionSpec:
    """The composition constraint of a schema record's conventional cell (what the predictor is asked)."""
    return CompositionSpec.from_counts(record.composition.counts, "cell")


class MostFrequentBaseline:
    name = "most_frequent"

    def __init__(self, train_records):
        self.order = [sg for sg, _ in Counter(r.space_group.number for r in train_records).most_common()]
        self.prior = letter_prior(train_records)

    def predict(self, spec: CompositionSpec, property_name: str, value: float, top_k: int = 5) -> list[Guess]:
        guesses = []
        for sg in self.order:
            if len(guesses) >= top_k:
                break
            if is_feasible(sg, spec):
                fixed = repair(sg, spec, (), prior=self.prior)
                guesses.append(Guess(sg, fixed.assignment))
        return guesses


class NearestCompositionBaseline:
    name = "nearest_composition"

    def __init__(self, train_records, property_name: str = "band_gap", pool: int = 200):
        self.records = list(train_records)
        self.property_name = canonical_property(property_name)
        self.pool = pool
        self.table = CompositionNeighbours.from_records(self.records, (self.property_name,))
        self.prior = letter_prior(self.records)
        self.frequency_order = [
            sg for sg, _ in Counter(r.space_group.number for r in self.records).most_common()
        ]

    def neighbours(self, spec: CompositionSpec, value: float | None) -> list[int]:
        """The ``pool`` nearest training crystals, ties by closeness of the property to ``value``."""
        return [int(j) for j in self.table.nearest(spec.count_dict, self.pool, self.property_name, value)]

    def _mapped_orbits(self, neighbour, spec: CompositionSpec) -> list[tuple[str, str]]:
        counts = neighbour.composition.counts
        mine = dict(zip(spec.elements, spec.counts))
        mapping = {e: e for e in counts if e in mine}
        rest_theirs = sorted(
            (e for e in counts if e not in mapping), key=lambda e: -counts[e] / sum(counts.values())
        )
        rest_mine = sorted(
            (e for e in mine if e not in mapping.values()), key=lambda e: -mine[e] / sum(mine.values())
        )
        mapping.update(zip(rest_theirs, rest_mine))
        return [(mapping[w.element], w.letter) for w in neighbour.wyckoff if w.element in mapping]

    def predict(self, spec: CompositionSpec, property_name: str, value: float, top_k: int = 5) -> list[Guess]:
        guesses, seen = [], set()
        for i in self.neighbours(spec, value):
            neighbour = self.records[i]
            sg = neighbour.space_group.number
            if sg in seen or not is_feasible(sg, spec):
                continue
            seen.add(sg)
            fixed = repair(sg, spec, self._mapped_orbits(neighbour, spec), prior=self.prior)
            guesses.append(Guess(sg, fixed.assignment, raw_valid=not fixed.repaired, repaired=fixed.repaired))
            if len(guesses) >= top_k:
                break
        for sg in self.frequency_order:  # fewer distinct groups nearby: fall back on frequency
            if len(guesses) >= top_k:
                break
            if sg not in seen and is_feasible(sg, spec):
                seen.add(sg)
                guesses.append(Guess(sg, repair(sg, spec, (), prior=self.prior).assignment))
        return guesses


class LMPredictor:
    """Adapter of :class:`llm_torch.predict.Predictor` to the evaluation interface."""

    def __init__(self, predictor, name: str | None = None, constrained: bool = True):
        self.predictor = predictor
        self.name = name or f"lm:{predictor.model_name}"
        self.constrained = constrained

    def predict(self, spec, property_name, value, top_k=5) -> list[Guess]:
        prediction = self.predictor.predict(
            spec, property_name, value, top_k=top_k, constrained=self.constrained
        )
        guesses = [
            Guess(h.space_group, h.assignment, h.raw_valid, h.repaired, h.output_text, h.logprob, h.score)
            for h in prediction.candidates
        ]
        self.last_candidates = guesses  # every scored hypothesis, for per-row records (re-ranking studies)
        return guesses[:top_k]


# ============================================================================ evaluation


# Metrics that are per-row averages (what --merge weights by rows).
ROW_AVERAGES = ("rouge1", "rouge2", "rougeL", "sg_top1", "sg_top5", "wyckoff_exact", "validity")


def _finite(x):
    return float(x) if x is not None and math.isfinite(x) else None


def evaluate_predictor(
    predictor,
    records,
    property_name: str,
    top_k: int = 5,
    progress: bool = False,
    details: list | None = None,
) -> dict:
    """Average metrics of ``predictor`` (anything with ``predict(spec, prop, value, top_k)``) on ``records``.
    ``details``: a list that receives one dict per row (the truth and every scored hypothesis with its
    log-probability and ranking score; all candidates where the predictor keeps them in
    ``last_candidates``)."""
    property_name = canonical_property(property_name)
    sums: dict[str, float] = defaultdict(float)
    n = hyps = repaired = 0
    start = time.time()
    for i, record in enumerate(records):
        value = record.property(property_name)
        if value is None:
            continue
        spec = record_spec(record)
        truth_sg = record.space_group.number
        truth = [(w.element, w.letter) for w in record.wyckoff]
        reference = format_output(truth_sg, truth, spec.elements)
        guesses = predictor.predict(spec, property_name, value, top_k=top_k)
        n += 1
        hyps += len(guesses)
        repaired += sum(g.repaired for g in guesses)
        if details is not None:
            details.append(
                {
                    "row": i,
                    "id": record.provenance.id,
                    "value": value,
                    "space_group": truth_sg,
                    "assignment": [list(t) for t in truth],
                    "hypotheses": [
                        {
                            "space_group": g.space_group,
                            "assignment": [list(t) for t in g.assignment],
                            "logprob": _finite(g.logprob),
                            "score": _finite(g.score),
                        }
                        for g in getattr(predictor, "last_candidates", guesses)
                    ],
                }
            )
        if not guesses:
            continue
        top = guesses[0]
        text = top.text or format_output(top.space_group, top.assignment, spec.elements)
        sums["rouge1"] += rouge_n(text, reference, 1)["f1"]
        sums["rouge2"] += rouge_n(text, reference, 2)["f1"]
        sums["rougeL"] += rouge_l(text, reference)["f1"]
        sums["sg_top1"] += top.space_group == truth_sg
        sums["sg_top5"] += truth_sg in [g.space_group for g in guesses[:5]]
        sums["wyckoff_exact"] += top.space_group == truth_sg and Counter(top.assignment) == Counter(truth)
        sums["validity"] += top.raw_valid
        if progress and (i + 1) % 100 == 0:
            print(f"  {getattr(predictor, 'name', '?')}: {i + 1} rows", file=sys.stderr)
    metrics = {k: sums[k] / n if n else float("nan") for k in ROW_AVERAGES}
    metrics["repair_rate"] = repaired / hyps if hyps else 0.0
    metrics["rows"] = n
    metrics["hypotheses"] = hyps
    metrics["seconds"] = round(time.time() - start, 1)
    return metrics


def evaluate_model_on_split(
    model,
    tokenizer,
    split: str,
    property_name: str,
    *,
    limit: int = 200,
    prompt_style: str = "plain",
    model_name: str = "model",
    root=None,
    top_k: int = 5,
) -> dict:
    """LM metrics on the first ``limit`` crystals of a policy split (used by the trainer's model card)."""

    records = dataset.split_records(split, root, limit)
    predictor = Predictor(
        model, tokenizer, prompt_style=prompt_style, model_name=model_name, property_name=property_name
    )
    metrics = evaluate_predictor(LMPredictor(predictor), records, property_name, top_k)
    metrics["data"] = f"{split} (first {limit})"
    return metrics


def model_identity(model_dir: str | Path) -> dict:
    """What a results file needs to name the evaluated weights: the folder, the SHA-256 of every
    safetensors file in it, and the model card's name, creation time and training command (a
    folder path alone does not say which of several trainings was copied there)."""

    folder = Path(model_dir)
    identity: dict[str, Any] = {
        "path": str(model_dir),
        "weights_sha256": {w.name: file_sha256(w) for w in sorted(folder.glob("*.safetensors"))},
    }
    card_path = folder / "model_card.json"
    if card_path.exists():
        try:
            card = json.loads(card_path.read_text())
            identity["card"] = {
                k: card[k] for k in ("name", "created", "command", "exported_as") if k in card
            }
        except (OSError, ValueError):  # the identity is informative; a bad card was reported when loading
            identity["card"] = None
    return identity


# data fields that must agree for shards to be one evaluation (merge_results also compares the
# ranking settings and the evaluated weights' SHA-256).
_SAME_IN_SHARDS = ("rows", "train", "property", "composition_mode")


def _shard_range(payload: dict) -> tuple[int, int]:
    data = payload["data"]
    start = data.get("offset") or 0
    # rows without the property are skipped by every method; older files lack "records"
    rows = data.get("records", max(m["rows"] for m in payload["results"].values()))
    return start, start + rows


def _common_model_name(payloads: Sequence[dict]) -> list[dict]:
    """The language model's method is named after its folder (``lm:FOLDER``): shards that evaluated the
    same weights (SHA-256, checked by the caller) from different folders (e.g. an export and its
    embedded copy) are one method, named as most shards name it."""
    names = [[k for k in p["results"] if k.startswith("lm:")] for p in payloads]
    if not all(len(n) == 1 for n in names) or len({n[0] for n in names}) == 1:
        return list(payloads)
    common = Counter(n[0] for n in names).most_common(1)[0][0]  # ties: the first shard's name
    return [
        {**p, "results": {(common if k == n[0] else k): v for k, v in p["results"].items()}}
        for p, n in zip(payloads, names)
    ]


def merge_results(payloads: Sequence[dict]) -> dict:
    """Combine results files of disjoint row ranges of one evaluation into one (exact: the
    averages are weighted by rows, ``repair_rate`` by hypotheses where the shards count them).

    Raises ValueError when the shards differ in data, ranking or weights, or overlap.
    """
    if len(payloads) < 2:
        raise ValueError("merge needs at least two results files")
    named = _common_model_name(payloads)
    lm_name = next((k for k in named[0]["results"] if k.startswith("lm:")), None)
    # the model as the shards the method is named after record it (path, card), not an export's copy
    model = next((p.get("model") for p in payloads if lm_name in p["results"]), payloads[0].get("model"))
    payloads = named
    first = payloads[0]
    for other in payloads[1:]:
        for key in _SAME_IN_SHARDS:
            if first["data"].get(key) != other["data"].get(key):
                raise ValueError(
                    f"shards differ in data.{key}: {first['data'].get(key)!r} vs {other['data'].get(key)!r}"
                )
        if first.get("ranking") != other.get("ranking"):
            raise ValueError("shards differ in ranking settings")
        weights = [(p.get("model") or {}).get("weights_sha256") for p in (first, other)]
        if weights[0] != weights[1]:
            raise ValueError("shards evaluated different weights (SHA-256 differs)")
        if set(first["results"]) != set(other["results"]):
            raise ValueError(
                f"shards evaluated different methods: {sorted(first['results'])} "
                f"vs {sorted(other['results'])}"
            )
    ranges = sorted(_shard_range(p) for p in payloads)
    for (a0, a1), (b0, b1) in zip(ranges, ranges[1:]):
        if b0 < a1:
            raise ValueError(f"shards overlap: rows {a0}-{a1} and {b0}-{b1} (0-based, end exclusive)")
    results = {}
    for name in first["results"]:
        parts = [p["results"][name] for p in payloads]
        rows = sum(m["rows"] for m in parts)
        merged = {
            k: sum(m[k] * m["rows"] for m in parts) / rows if rows else float("nan") for k in ROW_AVERAGES
        }
        if all("hypotheses" in m for m in parts):
            hyps = sum(m["hypotheses"] for m in parts)
            merged["repair_rate"] = (
                sum(m["repair_rate"] * m["hypotheses"] for m in parts) / hyps if hyps else 0.0
            )
            merged["hypotheses"] = hyps
        else:  # older files: per-row weighting, an approximation when rows have different hypothesis counts
            merged["repair_rate"] = sum(m["repair_rate"] * m["rows"] for m in parts) / rows if rows else 0.0
        merged["rows"] = rows
        merged["seconds"] = round(sum(m["seconds"] for m in parts), 1)
        results[name] = merged
    contiguous = all(b0 == a1 for (_, a1), (b0, _) in zip(ranges, ranges[1:]))
    return {
        "data": {
            **{k: first["data"].get(k) for k in _SAME_IN_SHARDS},
            "offset": ranges[0][0],
            "limit": ranges[-1][1] - ranges[0][0] if contiguous else None,
            "row_ranges": [list(r) for r in ranges],
        },
        "ranking": first.get("ranking"),
        "model": model,
        "results": results,
        "shards": [
            {k: p.get(k) for k in ("command", "machine", "git_commit", "date")}
            | {"rows": list(_shard_range(p))}
            for p in sorted(payloads, key=_shard_range)
        ],
    }


def _table(results: dict[str, dict]) -> str:
    cols = (*ROW_AVERAGES, "repair_rate", "rows", "seconds")
    lines = ["| method | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, m in results.items():
        cells = [
            f"{m[c]:.3f}" if isinstance(m[c], float) and c not in ("seconds",) else str(m[c]) for c in cols
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m llm_torch.evaluate", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--csv", help="CDVAE CSV of the rows to evaluate on (e.g. test.csv.gz)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate N rows (default: all)")
    parser.add_argument("--offset", type=int, default=0, help="skip the first N rows (to evaluate in shards)")
    parser.add_argument(
        "--merge",
        nargs="+",
        metavar="RESULTS",
        help="combine results files of disjoint row ranges (from --offset/--limit) into --out",
    )
    parser.add_argument(
        "--model", help="model folder (default: the embedded model, if any; else baselines only)"
    )
    parser.add_argument("--property", default="band_gap")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--train-split", default="train", help="policy split the baselines are fitted on")
    parser.add_argument("--train-csv", help="fit the baselines on this CSV instead")
    parser.add_argument("--baselines-only", action="store_true")
    parser.add_argument("--no-constraints", action="store_true", help="LM: free decoding + repair")
    add_ranking_arguments(parser)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", help="write the results as JSON")
    parser.add_argument(
        "--predictions",
        metavar="JSONL",
        help="write the language model's per-row records (truth, every scored hypothesis with its "
        "log-probability and score; row = position after --offset) for error analysis and re-ranking",
    )
    args = parser.parse_args(argv)

    if args.merge:
        return _merge_main(args, argv)
    if not args.csv:
        print("error: --csv is required (or --merge RESULTS...)", file=sys.stderr)
        return 2

    try:
        ranking, table = ranking_from_args(args)
        property_name = canonical_property(args.property)
        records = dataset.csv_records(args.csv, args.limit, offset=args.offset)
        if not records:
            raise ValueError(f"no rows to evaluate in {args.csv} after --offset {args.offset}")
        train = (
            dataset.csv_records(args.train_csv) if args.train_csv else dataset.split_records(args.train_split)
        )
    except (ValueError, OSError, InputError) as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 1
    predictors: list[Any] = [MostFrequentBaseline(train), NearestCompositionBaseline(train, property_name)]
    note = None
    evaluated_model = None
    if not args.baselines_only:
        model_dir = Path(args.model) if args.model else default_model_dir(property_name)
        if (model_dir / "config.json").exists() or (model_dir / "adapter_config.json").exists():
            import torch  # torch (llm extra) on use: the baselines and the metrics run without it

            torch.set_num_threads(max(1, args.threads))
            predictor = Predictor.from_dir(model_dir, args.device, neighbours=table, ranking=ranking)
            predictors.append(LMPredictor(predictor, constrained=not args.no_constraints))
            evaluated_model = model_identity(model_dir)
        elif args.model:
            print(f"error: no model in {model_dir}", file=sys.stderr)
            return 1
        else:
            note = f"no LM evaluated: no --model and no embedded model at {model_dir}"
            print(note, file=sys.stderr)
    results = {}
    details: list = []
    for predictor in predictors:
        is_lm = isinstance(predictor, LMPredictor)
        results[predictor.name] = evaluate_predictor(
            predictor, records, property_name, args.top_k, progress=True, details=details if is_lm else None
        )
    print(_table(results))
    if args.predictions and details:
        path = Path(args.predictions)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            "".join(json.dumps({**row, "row": row["row"] + args.offset}) + "\n" for row in details)
        )
    if args.out:
        payload = {
            "data": {
                "rows": args.csv,
                "offset": args.offset,
                "limit": args.limit,
                "records": len(records),
                "train": args.train_csv or args.train_split,
                "property": property_name,
                "composition_mode": "cell",
            },
            "ranking": {
                **dataclasses.asdict(ranking),
                "neighbours": table.source if table is not None else None,
            },
            "model": evaluated_model,
            "command": " ".join(
                ["python -m llm_torch.evaluate", *(argv if argv is not None else sys.argv[1:])]
            ),
            "results": results,
            "machine": {**provenance.machine(("torch",)), "device": args.device},
            "git_commit": provenance.git_commit(),
            "date": provenance.utc_now(),
        }
        if note:
            payload["note"] = note
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(payload, indent=1))
    return 0


def _merge_main(args, argv) -> int:
    if not args.out:
        print("error: --merge needs --out", file=sys.stderr)
        return 2
    try:
        payloads = []
        for name in args.merge:
            try:
                payloads.append(json.loads(Path(name).read_text()))
            except (OSError, ValueError) as error:
                raise ValueError(f"cannot read results file {name}: {one_line(error)}") from error
            if not isinstance(payloads[-1], dict) or not {"data", "results"} <= set(payloads[-1]):
                raise ValueError(f"{name} is not an llm_torch.evaluate results file")
        merged = merge_results(payloads)
    except (ValueError, KeyError, TypeError) as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 1
    merged["command"] = " ".join(
        ["python -m llm_torch.evaluate", *(argv if argv is not None else sys.argv[1:])]
    )
    merged["date"] = provenance.utc_now()
    print(_table(merged["results"]))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(merged, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
