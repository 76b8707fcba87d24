"""Predict symmetry hypotheses (JSON symmetry schema records) from a formula and a target property.

    python -m llm_torch.predict --formula LiFePO4 --band-gap 3.0 --top-k 5
    python -m llm_torch.predict --formula Li4Fe4P4O16 --formation-energy -2.5 --model DIR --out h.jsonl
    python -m llm_torch.predict --csv inputs.csv --out hypotheses.jsonl
        # columns: formula, band_gap | formation_energy
    python -m llm_torch.predict --jsonl inputs.jsonl --device cuda
        # {"formula": ..., "band_gap": ...} per line

Strategy (constrained, the default): every space group that admits a Wyckoff assignment for
the composition is scored exactly, ``log p("Space group: N (symbol)\\n" | prompt)``; for the
best ``max(top_k, candidates)`` groups the rest of the answer is decoded (beam search,
``--num-beams``; 1 = greedy) under :class:`llm_torch.decoding.SymmetryLogitsProcessor`, so each
answer is a valid assignment; when there are fewer groups than ``--top-k``, alternative
assignments are sampled. Each hypothesis gets the log-probability of its whole answer
(canonical tokenisation, EOS included) plus, when a composition table is loaded
(:mod:`llm_torch.neighbours`, the embedded MP-20 one by default), ``prior_weight * log(p_nn(group)
+ floor)``, the nearest-training-composition prior; hypotheses are ranked by that score (rank 1
= best) and the best ``top_k`` kept (:class:`Ranking`; ``--no-prior`` ranks by the log-probability
alone). The parsed answer is checked
and, if invalid (possible only with ``--no-constraints``), repaired
(:func:`llm_torch.constraints.repair`); the repair rate is reported on stderr.

Output: one record per line (JSONL) to ``--out`` or stdout; ``provenance`` = ``{"source":
"stage1", "id": input id, "model": model folder name, "score": log-prob, "rank": 1..k}``; the
record's ``properties`` hold the target. Every record passes
``unimdm_jax.schema.validate_record``. Compositions: see ``llm_torch/README.md``
(``--composition-mode auto|cell|reduced``). Bad input: one line on stderr, exit 1, nothing
written. Without ``--model`` the embedded model for the property
(``llm_torch/checkpoints/small_glm4_bg`` or ``small_glm4_fm``) is used.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from tqdm.auto import tqdm

from unimdm_jax.errors import one_line
from unimdm_jax.schema import register_property, wyckoff_positions

from .constraints import (
    DEFAULT_MAX_ATOMS,
    CompositionError,
    CompositionSpec,
    OutputGrammar,
    check_assignment,
    make_record,
    parse_composition,
    repair,
)
from .neighbours import DEFAULT_TABLE, CompositionNeighbours
from .prompts import (
    build_prompt,
    canonical_property,
    format_output,
    parse_output,
    positions_line,
    prompt_text,
    space_group_line,
)

# torch, transformers and the modules built on them (decoding, model) are imported on use:
# parsing, ranking and the CLI's checks run without the llm extra (unimdm_jax.generation imports this module)

__all__ = [
    "CHECKPOINT_DIR",
    "Ranking",
    "DEFAULT_MODELS",
    "Hypothesis",
    "PredictInput",
    "Prediction",
    "Predictor",
    "default_model_dir",
    "resolve_model_dir",
    "main",
    "read_inputs",
]

CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints"
DEFAULT_MODELS = {"band_gap": "small_glm4_bg", "formation_energy_per_atom": "small_glm4_fm"}


class InputError(ValueError):
    """Bad user input (one line)."""


@dataclass(frozen=True)
class Ranking:
    """How hypotheses are found and ordered.

    Defaults chosen on the holdout split (val rows 1-1,000, the band-gap model's first stage; the study
    is in ``llm_torch/README.md``): decoding the assignment for the best 8 groups instead of
    ``top_k`` and adding the nearest-composition prior with weight 1, tau 0.2, k 50, floor 1e-3
    raised space-group top-1 from 0.589 to 0.621, top-5 from 0.818 to 0.833 and Wyckoff exact
    from 0.416 to 0.424 (tuned on one half of the holdout, the best setting gained +3.6 and +1.8
    points of top-1 on the other half). ``num_beams`` is the beam width of the assignment decoding:
    4 beams instead of greedy decoding took the first 300 holdout rows from 0.680 / 0.443 to
    0.700 / 0.500 (top-1 / exact, with the prior); its cost, measured under stated conditions, is in
    the README.
    ``prior_tie_break``: the neighbours tied at the ``prior_k``-th place (most rows) are those whose property
    is closest to the target (what the study above used; the check is in llm_torch/README.md).
    """

    candidates: int = 8  # groups whose assignment is decoded (at least top_k)
    num_beams: int = 4
    prior_weight: float = 1.0  # weight of log(p_nn(group) + floor); 0 = language model alone
    prior_k: int = 50
    prior_tau: float = 0.2
    prior_floor: float = 1e-3
    # order of equally distant neighbours at the k-th place: "property" (closest to the target value first;
    # the ranking studied on the holdout) or "index" (table order)
    prior_tie_break: str = "property"

    def __post_init__(self):
        if self.prior_tie_break not in ("property", "index"):
            raise ValueError(f"prior_tie_break must be 'property' or 'index', not {self.prior_tie_break!r}")


@dataclass
class Hypothesis:
    space_group: int
    assignment: tuple[tuple[str, str], ...]
    counts: dict[str, int]
    output_text: str
    score: float = float("nan")  # ranking score: logprob + prior_weight * log(p_nn(group) + floor)
    logprob: float = float("nan")  # log p(answer | prompt)
    sg_logprob: float = float("nan")
    raw_valid: bool = True  # the model's own answer was a valid assignment
    repaired: bool = False

    def key(self):
        return self.space_group, tuple(sorted(self.assignment))


@dataclass
class Prediction:
    spec: CompositionSpec
    property_name: str
    value: float
    hypotheses: list[Hypothesis] = field(default_factory=list)  # the best top_k, best first
    candidates: list[Hypothesis] = field(default_factory=list)  # every scored hypothesis, best first

    def records(self, model_name: str | None = None, input_id: str | None = None) -> list:
        return [
            make_record(
                h.space_group,
                h.counts,
                h.assignment,
                [(self.property_name, self.value)],
                source="stage1",
                id=input_id,
                model=model_name,
                score=float(h.score) if math.isfinite(h.score) else None,
                rank=rank,
            )
            for rank, h in enumerate(self.hypotheses, start=1)
        ]


@dataclass
class PredictInput:
    formula: str
    spec: CompositionSpec
    property_name: str | None  # None: decided by the model
    values: dict[str, float]
    id: str | None = None


def default_model_dir(property_name: str) -> Path:
    return CHECKPOINT_DIR / DEFAULT_MODELS[canonical_property(property_name)]


def resolve_model_dir(property_name: str, model: str | Path | None = None, flag: str = "--model") -> Path:
    """The model folder to use: ``model`` if given, else the embedded model for the property.

    Raises :class:`InputError` (one line) when the folder does not exist or the embedded model
    has not been trained yet.
    """
    if model:
        model_dir = Path(model)
        if not model_dir.is_dir():
            raise InputError(f"model folder {model_dir} does not exist")
        return model_dir
    model_dir = default_model_dir(property_name)
    if not (model_dir / "model_card.json").exists():
        raise InputError(
            f"no embedded model yet at llm_torch/checkpoints/{model_dir.name}; train one with "
            f"`python -m llm_torch.finetune --config configs/llm_{model_dir.name}.py` or pass {flag} DIR"
        )
    return model_dir


class Predictor:
    """A causal LM + tokenizer that writes answers in the format of :mod:`llm_torch.prompts`."""

    def __init__(
        self,
        model,
        tokenizer,
        *,
        prompt_style: str = "plain",
        model_name: str = "model",
        property_name: str | None = None,
        neighbours=None,
        ranking: Ranking | None = None,
        prefill_once: bool = True,
    ):
        self.model = model
        # prefill each item's prompt once and repeat its cache over the beams
        # (llm_torch.decoding.prefilled_cache); False: let generate prefill every beam's copy
        # (slower; on CPU float32 the same answers, tests/test_llm_torch.py)
        self.prefill_once = prefill_once
        self.tokenizer = tokenizer
        self.prompt_style = prompt_style
        self.model_name = model_name
        self.property_name = canonical_property(property_name) if property_name else None
        self.neighbours = neighbours  # llm_torch.neighbours.CompositionNeighbours or None (no prior)
        self.ranking = ranking or Ranking()

    @classmethod
    def from_dir(
        cls,
        model_dir: str | Path,
        device: str = "cpu",
        dtype: str = "auto",
        trust_remote_code: bool = False,
        neighbours="default",
        ranking: Ranking | None = None,
    ):
        """Load a model folder. ``neighbours``: the composition table (:mod:`llm_torch.neighbours`) of the
        ranking prior: ``"default"`` = the embedded MP-20 table, a path, a loaded table, or None
        (no prior)."""
        from .model import load_for_inference  # on use: see the note under the imports

        table = neighbours
        if isinstance(neighbours, (str, Path)):
            table = CompositionNeighbours.load(DEFAULT_TABLE if neighbours == "default" else neighbours)
        model, tokenizer, card = load_for_inference(model_dir, device, dtype, trust_remote_code)
        if card.get("property_name") and card.get("property_unit"):
            register_property(card["property_name"], card["property_unit"])  # a user's own property
        return cls(
            model,
            tokenizer,
            prompt_style=card.get("prompt_style", "plain"),
            model_name=Path(model_dir).resolve().name,
            property_name=card.get("property_name"),
            neighbours=table,
            ranking=ranking,
        )

    # ------------------------------------------------------------------ pieces

    def _encode(self, text: str) -> list[int]:
        from .decoding import encode  # on use: see the note under the imports

        return encode(self.tokenizer, text)

    def prompt_ids(self, spec: CompositionSpec, property_name: str, value: float) -> list[int]:
        example = build_prompt(spec.count_dict, property_name, value, composition_mode=spec.mode)
        return self._encode(prompt_text(example, self.tokenizer, style=self.prompt_style))

    def _generate(
        self,
        input_ids: list[int],
        grammar,
        prefix: str,
        *,
        constrained: bool,
        sample: bool,
        num_beams: int,
        num_return: int,
        temperature: float,
    ) -> list[str]:
        return self._generate_batch(
            [(input_ids, prefix)],
            grammar,
            constrained=constrained,
            sample=sample,
            num_beams=num_beams,
            num_return=num_return,
            temperature=temperature,
        )[0]

    def _generate_batch(
        self,
        items: list[tuple[list[int], str]],
        grammar,
        *,
        constrained: bool,
        sample: bool,
        num_beams: int,
        num_return: int,
        temperature: float,
    ) -> list[list[str]]:
        """Decode several ``(input ids, output prefix)`` items in one ``generate`` call: ``num_return``
        texts per item. Items are left-padded (masked; positions follow the mask), so each item's
        beam search is the one it would get alone: beam scores are normalised by the generated
        length only, and finished items just wait for the others. One call for the ``candidates``
        groups instead of one per group: 3.04 -> 2.52 s per crystal on the 2-core CPU (llm_torch/README).
        ``grammar``: one grammar for every item, or a list of one per item (items of several
        compositions decoded together, :meth:`predict_many`)."""
        # on use: see the note under the imports
        import torch
        from transformers import GenerationConfig

        from .decoding import SymmetryLogitsProcessor, prefilled_cache

        device = next(self.model.parameters()).device
        pad = (
            self.tokenizer.pad_token_id
            if self.tokenizer.pad_token_id is not None
            else self.tokenizer.eos_token_id
        )
        width = max(len(ids) for ids, _ in items)
        inputs = torch.full((len(items), width), pad, dtype=torch.long, device=device)
        mask = torch.zeros((len(items), width), dtype=torch.long, device=device)
        for row, (ids, _) in enumerate(items):
            inputs[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long, device=device)
            mask[row, width - len(ids) :] = 1
        grammars = list(grammar) if isinstance(grammar, (list, tuple)) else [grammar] * len(items)
        processors = []
        if constrained:
            processor = SymmetryLogitsProcessor(
                self.tokenizer, grammars, width, [prefix for _, prefix in items]
            )
            processors.append(processor)
        budget = max(g.max_new_chars() for g in grammars) if constrained else 1024
        limit = getattr(getattr(self.model, "config", None), "max_position_embeddings", None)
        if isinstance(limit, int) and limit > width:
            budget = min(budget, limit - width)
        config = GenerationConfig(
            max_new_tokens=budget,
            do_sample=sample,
            num_beams=1 if sample else max(num_beams, num_return),
            num_return_sequences=num_return,
            eos_token_id=self.tokenizer.eos_token_id,
            pad_token_id=pad,
            **({"top_k": 0, "top_p": 1.0, "temperature": temperature} if sample else {}),
        )
        cache = {}
        if self.prefill_once:
            # generate expands each item to num_beams rows (beam search) or num_return rows (sampling)
            prefilled = prefilled_cache(
                self.model, inputs, mask, config.num_beams if config.num_beams > 1 else num_return
            )
            if prefilled is not None:
                cache = {prefilled[0]: prefilled[1]}
        with torch.no_grad():
            out = self.model.generate(
                input_ids=inputs,
                attention_mask=mask,
                generation_config=config,
                logits_processor=processors,
                **cache,
            )
        eos = self.tokenizer.eos_token_id
        texts: list[list[str]] = [[] for _ in items]
        for index, row in enumerate(out[:, width:].tolist()):  # num_return rows per item, in item order
            if eos in row:
                row = row[: row.index(eos)]
            row = [t for t in row if t != pad]
            if constrained:
                answer = "".join(processors[0].trie.texts.get(t, "") for t in row)
            else:
                answer = self.tokenizer.decode(row, skip_special_tokens=True)
            texts[index // num_return].append(items[index // num_return][1] + answer)
        return texts

    def _to_hypothesis(self, text: str, spec: CompositionSpec, fallback_sg: int | None) -> Hypothesis | None:
        sg, orbits = parse_output(text)
        if sg is not None and check_assignment(sg, spec, orbits):
            counts = implied_counts(sg, spec, orbits)
            return Hypothesis(
                sg, tuple(orbits), counts, format_output(sg, orbits, spec.elements), raw_valid=True
            )
        for candidate in ([sg] if sg is not None else []) + ([fallback_sg] if fallback_sg else []):
            try:
                fixed = repair(candidate, spec, orbits)
            except ValueError:
                continue
            return Hypothesis(
                candidate,
                fixed.assignment,
                fixed.counts,
                format_output(candidate, fixed.assignment, spec.elements),
                raw_valid=False,
                repaired=True,
            )
        return None

    # ------------------------------------------------------------------ main entry

    def predict(
        self,
        spec: CompositionSpec,
        property_name: str,
        value: float,
        *,
        top_k: int = 5,
        constrained: bool = True,
        num_beams: int | None = None,
        sample: bool = False,
        temperature: float = 1.0,
        seed: int = 0,
    ) -> Prediction:
        """Top-``top_k`` distinct hypotheses for one composition and target (see :class:`Ranking`;
        ``num_beams`` overrides its beam width)."""
        return self.predict_many(
            [(spec, property_name, value)],
            top_k=top_k,
            constrained=constrained,
            num_beams=num_beams,
            sample=sample,
            temperature=temperature,
            seed=seed,
        )[0]

    def predict_many(
        self,
        queries: Sequence[tuple[CompositionSpec, str, float]],
        *,
        top_k: int = 5,
        constrained: bool = True,
        num_beams: int | None = None,
        sample: bool = False,
        temperature: float = 1.0,
        seed: int = 0,
        max_batch: int = 32,
    ) -> list[Prediction]:
        """:meth:`predict` for several ``(composition, property, target)`` queries, with the beam
        searches of their candidate groups decoded together (``max_batch`` items per ``generate``
        call; every item's search is the one it gets alone, left padding being masked). Each
        query's answer equals what :meth:`predict` returns for it alone with the same ``seed``."""
        # on use: see the note under the imports
        import torch

        ranking = self.ranking
        num_beams = ranking.num_beams if num_beams is None else num_beams
        if sample or not constrained:  # draws from one random stream: one query at a time
            return [
                self._predict_one(q, top_k, constrained, num_beams, sample, temperature, seed)
                for q in queries
            ]
        starts = [self._rank_groups(*query) for query in queries]
        items, owners = [], []  # the constrained beam searches of every query, in query and rank order
        for index, (_, _, _, prompt, grammar, ranked, _) in enumerate(starts):
            for g in ranked[: max(top_k, ranking.candidates)]:
                prefix = space_group_line(g) + "\n" + positions_line(g) + "\n"
                items.append(((prompt + self._encode(prefix), prefix), grammar, g))
                owners.append(index)
        # chunks of items of similar length (answer budget, then prompt): less padding, and fewer
        # finished beams waiting for a long one
        order = sorted(range(len(items)), key=lambda i: (items[i][1].max_new_chars(), len(items[i][0][0])))
        decoded: list = [None] * len(items)
        for first in range(0, len(order), max_batch):
            chunk = order[first : first + max_batch]
            texts = self._generate_batch(
                [items[i][0] for i in chunk],
                [items[i][1] for i in chunk],
                constrained=True,
                sample=False,
                num_beams=num_beams,
                num_return=1,
                temperature=temperature,
            )
            for i, answer in zip(chunk, texts):
                decoded[i] = answer
        predictions = []
        for index, (spec, property_name, value, prompt, grammar, ranked, sg_score) in enumerate(starts):
            torch.manual_seed(seed)  # the fallback draws below: as predict() alone makes them
            beams = [(g, texts) for (_, _, g), texts, o in zip(items, decoded, owners) if o == index]
            predictions.append(
                self._finish(
                    spec, property_name, value, prompt, grammar, ranked, sg_score, beams, top_k, temperature
                )
            )
        return predictions

    def _rank_groups(self, spec: CompositionSpec, property_name: str, value: float):
        """(spec, canonical property, value, prompt ids, grammar, feasible groups ranked by the exact
        log-probability of their space-group line, {group: that log-probability})."""
        from .decoding import sequence_logprobs  # on use: see the note under the imports

        property_name = canonical_property(property_name)
        prompt = self.prompt_ids(spec, property_name, value)
        grammar = OutputGrammar(spec)
        groups = list(grammar.groups)
        sg_lp = sequence_logprobs(
            self.model, prompt, [self._encode(space_group_line(g) + "\n") for g in groups]
        )
        ranked = [g for _, g in sorted(zip(sg_lp, groups), key=lambda t: -t[0])]
        return spec, property_name, value, prompt, grammar, ranked, dict(zip(groups, sg_lp))

    def _predict_one(self, query, top_k, constrained, num_beams, sample, temperature, seed) -> Prediction:
        """One query, decoded alone (sampled or unconstrained decoding)."""
        import torch  # on use: see the note under the imports

        torch.manual_seed(seed)
        spec, property_name, value, prompt, grammar, ranked, sg_score = self._rank_groups(*query)
        if not constrained:
            texts = self._generate(
                prompt,
                grammar,
                "",
                constrained=False,
                sample=sample,
                num_beams=max(num_beams, top_k),
                num_return=top_k,
                temperature=temperature,
            )
            return self._finish(
                spec,
                property_name,
                value,
                prompt,
                grammar,
                ranked,
                sg_score,
                [(ranked[0], texts)],
                top_k,
                temperature,
                fill=False,
            )
        chosen = ranked[: max(top_k, self.ranking.candidates)]
        prefixes = [space_group_line(g) + "\n" + positions_line(g) + "\n" for g in chosen]
        decoded = (
            self._generate_batch(
                [(prompt + self._encode(prefix), prefix) for prefix in prefixes],
                grammar,
                constrained=True,
                sample=sample,
                num_beams=num_beams,
                num_return=1,
                temperature=temperature,
            )
            if chosen
            else []
        )
        return self._finish(
            spec,
            property_name,
            value,
            prompt,
            grammar,
            ranked,
            sg_score,
            list(zip(chosen, decoded)),
            top_k,
            temperature,
        )

    def _finish(
        self,
        spec,
        property_name,
        value,
        prompt,
        grammar,
        ranked,
        sg_score,
        beams,
        top_k,
        temperature,
        fill=True,
    ) -> Prediction:
        """Hypotheses from the decoded ``beams`` ([(group, texts)] in ranked order), topped up by
        sampling other assignments when fewer than ``top_k`` are distinct (``fill``), scored by the
        language model (plus the neighbours' prior) and ranked."""
        from .decoding import sequence_logprobs  # on use: see the note under the imports

        ranking = self.ranking
        found: dict = {}

        def add(texts, fallback):
            for text in texts:
                h = self._to_hypothesis(text, spec, fallback)
                if h is not None and h.key() not in found:
                    h.sg_logprob = sg_score.get(h.space_group, float("nan"))
                    found[h.key()] = h

        for g, texts in beams:  # in ranked order, as the hypotheses are deduplicated
            add(texts, g)
        for _ in range(3 if fill else 0):  # fewer feasible groups than top_k: sample other assignments
            if len(found) >= top_k:
                break
            for g in ranked:
                if len(found) >= top_k:
                    break
                prefix = space_group_line(g) + "\n" + positions_line(g) + "\n"
                add(
                    self._generate(
                        prompt + self._encode(prefix),
                        grammar,
                        prefix,
                        constrained=True,
                        sample=True,
                        num_beams=1,
                        num_return=top_k,
                        temperature=max(temperature, 1.0),
                    ),
                    g,
                )
        hypotheses = list(found.values())
        if hypotheses:
            eos = self.tokenizer.eos_token_id
            scores = sequence_logprobs(
                self.model, prompt, [self._encode(h.output_text) + [eos] for h in hypotheses]
            )
            prior = {}
            if self.neighbours is not None and ranking.prior_weight:
                prior = self.neighbours.log_prior(
                    spec.count_dict,
                    {h.space_group for h in hypotheses},
                    k=ranking.prior_k,
                    tau=ranking.prior_tau,
                    floor=ranking.prior_floor,
                    property_name=property_name,
                    target=value if ranking.prior_tie_break == "property" else None,
                )
            for h, s in zip(hypotheses, scores):
                h.logprob = s
                h.score = s + ranking.prior_weight * prior.get(h.space_group, 0.0)
        hypotheses.sort(key=lambda h: -h.score)
        return Prediction(spec, property_name, float(value), hypotheses[:top_k], hypotheses)


def implied_counts(sg: int, spec: CompositionSpec, orbits) -> dict[str, int]:
    """Cell counts of an assignment ``orbits`` ((element, letter), ...) in group ``sg``: with a
    reduced-formula spec, the number of formula units the assignment chose."""

    mult = {p.letter: p.multiplicity for p in wyckoff_positions(sg)}
    counts = {e: 0 for e in spec.elements}
    for e, letter in orbits:
        counts[e] += mult[letter]
    return counts


# ============================================================================ inputs

_FORMULA_KEYS = ("formula", "pretty_formula", "composition")
_ID_KEYS = ("id", "material_id")
#: input columns/keys of a target value, first found wins: a subset of schema.PROPERTY_ALIASES
#: (its fm and ef spellings are not accepted as columns here)
_VALUE_KEYS = {
    "band_gap": ("band_gap", "bg"),
    "formation_energy_per_atom": ("formation_energy_per_atom", "formation_energy"),
}


def _number(raw: Any, what: str, where: str) -> float | None:
    if raw is None or (isinstance(raw, str) and raw.strip() == ""):
        return None
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise InputError(f"{where}: {what} must be a number, got {raw!r}") from None
    if not math.isfinite(value):
        raise InputError(f"{where}: {what} must be finite, got {raw!r}")
    return value


def make_input(
    formula: Any,
    values: dict[str, float | None],
    *,
    mode: str = "auto",
    max_atoms: int = DEFAULT_MAX_ATOMS,
    id: str | None = None,
    where: str = "input",
    property_name: str | None = None,
) -> PredictInput:
    """Validate one input (formula + at least one target value)."""
    if not isinstance(formula, str):
        raise InputError(f"{where}: formula must be a string")
    try:
        spec = parse_composition(formula, mode, max_atoms)
    except CompositionError as error:
        raise InputError(f"{where}: {error}") from None
    values = {k: v for k, v in values.items() if v is not None}
    if property_name is not None:
        if property_name not in values:
            raise InputError(f"{where}: no {property_name} value")
    elif not values:
        raise InputError(f"{where}: no target property (give band_gap or formation_energy)")
    elif len(values) == 1:
        property_name = next(iter(values))
    return PredictInput(formula, spec, property_name, values, id)


def read_inputs(
    path: str | Path,
    kind: str,
    *,
    mode: str = "auto",
    max_atoms: int = DEFAULT_MAX_ATOMS,
    property_name: str | None = None,
) -> list[PredictInput]:
    """Inputs of a CSV (header with formula + band_gap / formation_energy[_per_atom]) or JSONL file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    rows: list[tuple[str, dict]] = []
    try:
        if kind == "csv":
            opener = gzip.open if path.name.endswith(".gz") else open
            with opener(path, "rt", encoding="utf-8", newline="") as handle:
                for i, row in enumerate(csv.DictReader(handle)):
                    rows.append((f"{path.name}:{i + 2}", row))
        else:
            with open(path, encoding="utf-8") as handle:
                for i, line in enumerate(handle):
                    if line.strip():
                        obj = json.loads(line)
                        if not isinstance(obj, dict):
                            raise InputError(f"{path.name}:{i + 1}: expected a JSON object")
                        rows.append((f"{path.name}:{i + 1}", obj))
    except (UnicodeDecodeError, json.JSONDecodeError, csv.Error, OSError) as error:
        raise InputError(f"{path}: cannot read ({one_line(error)})") from None
    if not rows:
        raise InputError(f"{path}: no inputs")
    inputs = []
    for where, row in rows:
        formula = next((row[k] for k in _FORMULA_KEYS if k in row), None)
        if formula is None:
            raise InputError(f"{where}: no formula (columns: {', '.join(_FORMULA_KEYS)})")
        values = {}
        for name, keys in _VALUE_KEYS.items():
            for key in keys:
                if key in row:
                    values[name] = _number(row[key], name, where)
                    break
        ident = next((str(row[k]) for k in _ID_KEYS if row.get(k) not in (None, "")), None)
        inputs.append(
            make_input(
                formula,
                values,
                mode=str(row.get("composition_mode") or mode),
                max_atoms=max_atoms,
                id=ident,
                where=where,
                property_name=property_name,
            )
        )
    return inputs


# ============================================================================ CLI


def add_ranking_arguments(parser: argparse.ArgumentParser) -> None:
    """The :class:`Ranking` options (shared by ``llm_torch.predict`` and ``llm_torch.evaluate``)."""
    default = Ranking()
    parser.add_argument(
        "--num-beams", type=int, default=default.num_beams, help="beam width of the assignment decoding"
    )
    parser.add_argument(
        "--candidates",
        type=int,
        default=default.candidates,
        help=f"space groups whose assignment is decoded (default {default.candidates}, at least --top-k)",
    )
    parser.add_argument(
        "--prior-weight",
        type=float,
        default=default.prior_weight,
        help=f"weight of the nearest-composition prior (default {default.prior_weight})",
    )
    parser.add_argument(
        "--no-prior", action="store_true", help="rank by the language model alone (prior weight 0)"
    )
    parser.add_argument(
        "--prior-tie-break",
        choices=("property", "index"),
        default=default.prior_tie_break,
        help="order of equally distant neighbours at the k-th place of the prior: closest property "
        f"value first, or table order (default {default.prior_tie_break})",
    )
    parser.add_argument(
        "--neighbours", help="composition table for the prior (default: the embedded MP-20 train table)"
    )


def ranking_from_args(args):
    """``(Ranking, CompositionNeighbours | None)`` from :func:`add_ranking_arguments` options;
    InputError if bad."""

    if args.num_beams < 1 or args.candidates < 1:
        raise InputError("--num-beams and --candidates must be >= 1")
    if not math.isfinite(args.prior_weight) or args.prior_weight < 0:
        raise InputError("--prior-weight must be a finite number >= 0")
    weight = 0.0 if args.no_prior else args.prior_weight
    ranking = Ranking(
        candidates=args.candidates,
        num_beams=args.num_beams,
        prior_weight=weight,
        prior_tie_break=args.prior_tie_break,
    )
    table = None
    if weight:
        try:
            table = CompositionNeighbours.load(args.neighbours or DEFAULT_TABLE)
        except ValueError as error:
            raise InputError(str(error)) from None
    return ranking, table


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llm_torch.predict", description=__doc__.split("\n\n")[0])
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--formula", help="reduced formula (LiFePO4) or conventional-cell counts (Li4Fe4P4O16)")
    src.add_argument("--csv", help="batch: CSV with formula and band_gap / formation_energy columns")
    src.add_argument("--jsonl", help="batch: JSON lines with formula and band_gap / formation_energy")
    parser.add_argument("--band-gap", type=float, help="target band gap in eV")
    parser.add_argument("--formation-energy", type=float, help="target formation energy in eV/atom")
    parser.add_argument(
        "--property", help="batch mode: which target column to use (band_gap or formation_energy)"
    )
    parser.add_argument("--composition-mode", choices=("auto", "cell", "reduced"), default="auto")
    parser.add_argument(
        "--max-atoms", type=int, default=DEFAULT_MAX_ATOMS, help="largest cell in reduced mode"
    )
    parser.add_argument("--id", help="provenance id of a single input (default: the formula)")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument(
        "--quiet", action="store_true", help="no progress bar over the rows of --csv / --jsonl"
    )
    parser.add_argument("--model", help="model folder (default: the embedded model for the property)")
    parser.add_argument("--out", help="JSONL output file (default: stdout)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, npu or auto")
    parser.add_argument("--dtype", default="auto")
    add_ranking_arguments(parser)
    parser.add_argument(
        "--sample", action="store_true", help="sample the assignments instead of greedy decoding"
    )
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--no-constraints", action="store_true", help="free decoding + repair (for measuring)"
    )
    parser.add_argument("--trust-remote-code", action="store_true")
    args = parser.parse_args(argv)

    # ---- validate all input before touching the model
    try:
        if args.top_k < 1:
            raise InputError("--top-k must be >= 1")
        if args.formula is not None:
            values = {"band_gap": args.band_gap, "formation_energy_per_atom": args.formation_energy}
            given = {k: v for k, v in values.items() if v is not None}
            if len(given) != 1:
                raise InputError("give exactly one target: --band-gap or --formation-energy")
            for name, v in given.items():
                _number(v, name, "input")
            inputs = [
                make_input(
                    args.formula,
                    given,
                    mode=args.composition_mode,
                    max_atoms=args.max_atoms,
                    id=args.id or args.formula.strip(),
                    where="formula",
                )
            ]
        else:
            if args.band_gap is not None or args.formation_energy is not None:
                raise InputError(
                    "in batch mode the targets come from the file (choose a column with --property)"
                )
            try:
                forced = canonical_property(args.property) if args.property else None
            except ValueError as error:
                raise InputError(str(error)) from None
            inputs = read_inputs(
                args.csv or args.jsonl,
                "csv" if args.csv else "jsonl",
                mode=args.composition_mode,
                max_atoms=args.max_atoms,
                property_name=forced,
            )
    except InputError as error:
        return _fail(str(error))

    # ---- model
    wanted = {i.property_name for i in inputs if i.property_name} or {"band_gap"}
    if len(wanted) > 1 and not args.model:
        return _fail("inputs ask for both properties; run once per property or pass --model")
    try:
        model_dir = resolve_model_dir(wanted.pop(), args.model)
    except InputError as error:
        return _fail(str(error))
    card_path = model_dir / "model_card.json"
    card = json.loads(card_path.read_text()) if card_path.exists() else {}
    model_property = card.get("property_name")
    for item in inputs:
        chosen = item.property_name or model_property or next(iter(item.values))
        if model_property and chosen != model_property:
            return _fail(
                f"{item.formula}: model {model_dir.name} predicts from {model_property}, not {chosen}"
            )
        if chosen not in item.values:
            return _fail(f"{item.formula}: no {chosen} value")
        item.property_name = chosen

    try:
        ranking, table = ranking_from_args(args)
    except InputError as error:
        return _fail(str(error))
    try:
        import torch  # on use: see the note under the imports

        torch.set_num_threads(max(1, args.threads))
        predictor = Predictor.from_dir(
            model_dir, args.device, args.dtype, args.trust_remote_code, neighbours=table, ranking=ranking
        )
    except (OSError, RuntimeError, ValueError) as error:
        return _fail(f"cannot load model {model_dir}: {one_line(error)}")

    lines, total, repaired = [], 0, 0
    rows = tqdm(inputs, desc="rows", unit="row", file=sys.stderr, disable=len(inputs) < 2 or args.quiet)
    for item in rows:
        prediction = predictor.predict(
            item.spec,
            item.property_name,
            item.values[item.property_name],
            top_k=args.top_k,
            constrained=not args.no_constraints,
            sample=args.sample,
            temperature=args.temperature,
            seed=args.seed,
        )
        for record in prediction.records(predictor.model_name, item.id or item.formula):
            lines.append(record.to_json())
        total += len(prediction.hypotheses)
        repaired += sum(h.repaired for h in prediction.hypotheses)
    text = "\n".join(lines) + ("\n" if lines else "")
    if args.out:  # written whole or not at all: a temporary file, then one rename
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(f".{out.name}.partial")
        partial.write_text(text, encoding="utf-8")
        partial.replace(out)
    else:
        sys.stdout.write(text)
    rate = repaired / total if total else 0.0
    print(
        f"{len(inputs)} input(s), {total} hypotheses, repair needed for {repaired} ({rate:.1%})",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
