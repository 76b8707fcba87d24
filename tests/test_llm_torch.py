"""Tokenizer, constrained decoding, scoring and the trainer (tiny models, CPU, 1 thread)."""

from __future__ import annotations

import json
from collections import Counter

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

# imported after the importorskip calls on purpose: without torch/transformers the module is skipped
from llm_torch.constraints import (  # noqa: E402
    CompositionSpec,
    OutputGrammar,
    check_assignment,
    make_record,
    parse_composition,
)
from llm_torch.dataset import examples_from_records, write_jsonl  # noqa: E402
from llm_torch.prompts import build_prompt, parse_output, prompt_text  # noqa: E402
from unimdm_jax.schema import validate_record, wyckoff_positions  # noqa: E402

torch.set_num_threads(1)

TINY = dict(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)


@pytest.fixture(scope="module")
def records(fixture_dataset):
    dataset, _ = fixture_dataset
    return [dataset[i].to_record(source="mp_20") for i in range(len(dataset))]


@pytest.fixture(scope="module")
def examples(records):
    return list(examples_from_records(records, "band_gap", composition_mode="mixed"))


@pytest.fixture(scope="module")
def tokenizer(examples, tmp_path_factory):
    from llm_torch.tokenizer import corpus_texts, load_tokenizer, train_tokenizer

    out = tmp_path_factory.mktemp("tok")
    train_tokenizer(corpus_texts(examples), vocab_size=1024, out_dir=out)
    return load_tokenizer(out)


@pytest.fixture(scope="module")
def tiny_model(tokenizer):
    from llm_torch.model import small_glm4

    model = small_glm4(
        len(tokenizer),
        seed=0,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **TINY,
    )
    return model.eval()


def test_tokenizer_round_trip_and_line_boundaries(tokenizer, examples):
    from llm_torch.decoding import encode

    assert 256 < len(tokenizer) <= 1024
    assert tokenizer.pad_token_id == 0 and tokenizer.eos_token_id == 1
    output = examples[0]["output"]
    ids = encode(tokenizer, output)
    assert tokenizer.decode(ids) == output
    # lines tokenized separately give the same tokens as the whole text (newlines are boundaries)
    lines = output.split("\n")
    pieces = [encode(tokenizer, line + "\n") for line in lines[:-1]] + [encode(tokenizer, lines[-1])]
    assert [t for piece in pieces for t in piece] == ids


def test_small_glm4_size():
    from llm_torch.model import parameter_count, small_glm4_config

    config = small_glm4_config(3072)
    assert config.model_type == "glm4" and config.hidden_size == 256 and config.num_hidden_layers == 4
    from transformers import Glm4ForCausalLM

    with torch.device("meta"):
        model = Glm4ForCausalLM(config)
    assert parameter_count(model) * 4 < 25e6  # float32 safetensors under 25 MB


def test_resolve_device_errors():
    from llm_torch.model import resolve_device

    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(RuntimeError, match="unknown device"):
        resolve_device("tpu")
    try:
        import torch_npu  # noqa: F401
    except ImportError:
        with pytest.raises(RuntimeError, match="torch_npu") as info:
            resolve_device("npu")
        assert "\n" not in str(info.value)


def _generate(model, tokenizer, spec, prompt_ids, *, sample, num_beams=1, num_return=1, seed=0):
    from transformers import GenerationConfig

    from llm_torch.decoding import SymmetryLogitsProcessor

    torch.manual_seed(seed)
    grammar = OutputGrammar(spec)
    inputs = torch.tensor([prompt_ids])
    processor = SymmetryLogitsProcessor(tokenizer, [grammar], inputs.shape[1])
    config = GenerationConfig(
        max_new_tokens=grammar.max_new_chars(),
        do_sample=sample,
        num_beams=num_beams,
        num_return_sequences=num_return,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **({"top_k": 0, "top_p": 1.0} if sample else {}),
    )
    with torch.no_grad():
        out = model.generate(
            input_ids=inputs,
            attention_mask=torch.ones_like(inputs),
            generation_config=config,
            logits_processor=[processor],
        )
    texts = []
    for row in out[:, inputs.shape[1] :].tolist():
        assert tokenizer.eos_token_id in row  # every sequence finished
        row = row[: row.index(tokenizer.eos_token_id)]
        texts.append("".join(processor.trie.texts[t] for t in row))
    assert processor.dead_ends == 0
    return grammar, texts


def test_constrained_decoding_random_model_is_always_valid(tiny_model, tokenizer, records):
    """The important behaviour: a random model under the grammar writes only valid records."""
    from llm_torch.decoding import encode

    cases = [(CompositionSpec.from_counts(r.composition.counts), r.property("band_gap")) for r in records[:6]]
    cases += [
        (parse_composition("LiFePO4"), 3.0),
        (parse_composition("SrTiO3"), 1.8),
        (parse_composition("Si"), 1.1),
    ]
    n = 0
    for i, (spec, value) in enumerate(cases):
        example = build_prompt(spec.count_dict, "band_gap", value, composition_mode=spec.mode)
        prompt_ids = encode(tokenizer, prompt_text(example, style="plain"))
        for sample, beams, ret in ((True, 1, 2), (False, 2, 1)):
            grammar, texts = _generate(
                tiny_model,
                tokenizer,
                spec,
                prompt_ids,
                sample=sample,
                num_beams=beams,
                num_return=ret,
                seed=i,
            )
            for text in texts:
                assert grammar.accepts(text), text
                sg, orbits = parse_output(text)
                assert check_assignment(sg, spec, orbits)
                counts = Counter()
                for e, letter in orbits:
                    counts[e] += next(p.multiplicity for p in wyckoff_positions(sg) if p.letter == letter)
                validate_record(
                    make_record(sg, {e: counts[e] for e in spec.elements}, orbits, [("band_gap", value)])
                )
                n += 1
    assert n == 3 * len(cases)


def test_sequence_logprobs_matches_full_forward(tiny_model, tokenizer):
    from llm_torch.decoding import encode, sequence_logprobs

    prompt = encode(tokenizer, "### Instruction:\nhello\n### Response:\n")
    conts = [encode(tokenizer, "Space group: 225 (Fm-3m)\n"), encode(tokenizer, "Space group: 1 (P1)\n"), [5]]
    fast = sequence_logprobs(tiny_model, prompt, conts, batch_size=2)
    for cont, value in zip(conts, fast):
        ids = torch.tensor([prompt + cont])
        with torch.no_grad():
            logp = torch.log_softmax(tiny_model(input_ids=ids).logits[0].float(), -1)
        expected = sum(float(logp[len(prompt) - 1 + j, t]) for j, t in enumerate(cont))
        assert value == pytest.approx(expected, abs=1e-3)


def test_predictor_top_k_records(tiny_model, tokenizer):
    from llm_torch.predict import Predictor

    predictor = Predictor(tiny_model, tokenizer, prompt_style="plain", model_name="tiny")
    for formula, k in (("Na4Cl4", 3), ("LiFePO4", 4), ("H", 3)):
        prediction = predictor.predict(parse_composition(formula), "band_gap", 2.0, top_k=k)
        assert len(prediction.hypotheses) == k
        assert len({h.key() for h in prediction.hypotheses}) == k
        scores = [h.score for h in prediction.hypotheses]
        assert scores == sorted(scores, reverse=True)
        records = prediction.records("tiny", formula)
        assert [r.provenance.rank for r in records] == list(range(1, k + 1))
        for record in records:
            validate_record(record)
            assert record.provenance.model == "tiny" and record.provenance.source == "stage1"
        assert not any(h.repaired for h in prediction.hypotheses)


def test_predictor_ranks_by_logprob_plus_weighted_neighbour_prior(tiny_model, tokenizer):
    import math

    import numpy as np

    from llm_torch.neighbours import CompositionNeighbours
    from llm_torch.predict import Predictor, Ranking
    from unimdm_jax.schema import ELEMENT_SYMBOLS

    spec = parse_composition("Na4Cl4")
    alone = Predictor(tiny_model, tokenizer, ranking=Ranking(candidates=6, prior_weight=0.0)).predict(
        spec, "band_gap", 2.0, top_k=6
    )
    groups = [h.space_group for h in alone.hypotheses]
    assert all(h.score == h.logprob for h in alone.hypotheses)
    # a table in which every NaCl-like crystal has the group the LM ranks last
    favourite = groups[-1]
    fractions = np.zeros((3, len(ELEMENT_SYMBOLS)), np.float32)
    fractions[:, ELEMENT_SYMBOLS.index("Na")] = fractions[:, ELEMENT_SYMBOLS.index("Cl")] = 0.5
    table = CompositionNeighbours(fractions, [favourite] * 3)
    ranking = Ranking(candidates=6, prior_weight=2.0, prior_k=3, prior_tau=0.2, prior_floor=1e-3)
    ranked = Predictor(tiny_model, tokenizer, neighbours=table, ranking=ranking).predict(
        spec, "band_gap", 2.0, top_k=6
    )
    assert {h.key() for h in ranked.hypotheses} == {h.key() for h in alone.hypotheses}  # same candidates
    logprob = {h.key(): h.logprob for h in alone.hypotheses}
    for h in ranked.hypotheses:
        prior = 1.0 if h.space_group == favourite else 0.0
        assert h.logprob == pytest.approx(logprob[h.key()], abs=1e-4)
        assert h.score == pytest.approx(h.logprob + 2.0 * math.log(prior + 1e-3), abs=1e-4)
    expected = sorted(ranked.hypotheses, key=lambda h: -h.score)
    assert [h.key() for h in ranked.hypotheses] == [h.key() for h in expected]
    if alone.hypotheses[0].logprob - alone.hypotheses[-1].logprob < 2.0 * math.log(1 / 1e-3):
        assert ranked.hypotheses[0].space_group == favourite


def _config(tmp_path, jsonl, **kw):
    from llm_torch.finetune import FinetuneConfig

    base = dict(
        name="tiny",
        mode="scratch",
        output_dir=str(tmp_path / "run"),
        train_jsonl=str(jsonl),
        eval_jsonl=str(jsonl),
        train_split=None,
        eval_split=None,
        limit_train=8,
        limit_eval=8,
        vocab_size=512,
        model=TINY,
        batch_size=8,
        learning_rate=1e-2,
        warmup_steps=0,
        lr_schedule="constant",
        log_every=1,
        save_every=3,
        device="cpu",
        max_steps=6,
    )
    base.update(kw)
    return FinetuneConfig(**base)


def test_finetune_scratch_decreases_loss_and_resumes(tmp_path, examples):
    from llm_torch.finetune import train

    jsonl = tmp_path / "train.jsonl"
    write_jsonl(examples[:8], jsonl)
    card = train(_config(tmp_path, jsonl))
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert log[0]["step"] == 1 and log[-1]["step"] == 6
    assert log[-1]["loss"] < log[0]["loss"]
    final = tmp_path / "run" / "final"
    assert (final / "model.safetensors").exists() and (final / "tokenizer.json").exists()
    saved = json.loads((final / "model_card.json").read_text())
    assert saved["metrics"]["steps"] == 6 and saved["data"]["train_examples"] == 8
    assert {"data", "command", "time_s", "hardware", "metrics"} <= set(saved) and card["mode"] == "scratch"
    # resume: the newest checkpoint (step 6) is picked up and training continues to step 8
    train(_config(tmp_path, jsonl, max_steps=8))
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [1, 2, 3, 4, 5, 6, 7, 8]


def test_finetune_lora_saves_adapter(tmp_path, examples, tokenizer, tiny_model):
    from llm_torch.finetune import train
    from llm_torch.predict import Predictor

    base = tmp_path / "base"
    tiny_model.save_pretrained(base)
    tokenizer.save_pretrained(base)
    jsonl = tmp_path / "train.jsonl"
    write_jsonl(examples[:8], jsonl)
    card = train(
        _config(
            tmp_path,
            jsonl,
            mode="lora",
            base_model=str(base),
            max_steps=1,
            learning_rate=1e-3,
            gradient_checkpointing=True,
            dtype="fp32",
        )
    )
    final = tmp_path / "run" / "final"
    assert (final / "adapter_model.safetensors").exists()
    adapter = json.loads((final / "adapter_config.json").read_text())
    assert set(adapter["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert adapter["r"] == 8 and adapter["lora_alpha"] == 32
    assert 0 < card["trainable_parameters"] < card["parameters"]
    predictor = Predictor.from_dir(final, "cpu")
    assert type(predictor.model).__name__.startswith("Peft")
    prediction = predictor.predict(parse_composition("NaCl", "cell"), "band_gap", 5.0, top_k=2)
    for record in prediction.records(predictor.model_name):
        validate_record(record)
    # the adapter model takes the prefilled key/value cache too, with the answers of the plain generate call
    from llm_torch.decoding import prefilled_cache

    ids = torch.tensor([[3, 4, 5, 6], [0, 3, 4, 5]])
    assert prefilled_cache(predictor.model, ids, (ids != 0).long(), 2)[1].get_seq_length() == 3
    spec = parse_composition("Na2Cl2", "cell")
    predictor.prefill_once = False
    plain = predictor.predict(spec, "band_gap", 5.0, top_k=3)
    predictor.prefill_once = True
    once = predictor.predict(spec, "band_gap", 5.0, top_k=3)
    assert [(h.key(), h.logprob) for h in once.hypotheses] == [(h.key(), h.logprob) for h in plain.hypotheses]


def test_finetune_full_trains_every_weight_of_a_saved_model(tmp_path, examples, tokenizer, tiny_model):
    """mode="full" (how the formation-energy model starts from the band-gap one): every weight
    is trainable and moves, the base model's tokenizer is kept, the export loads as a Predictor."""
    from safetensors.torch import load_file

    from llm_torch.finetune import train
    from llm_torch.predict import Predictor

    base = tmp_path / "base"
    tiny_model.save_pretrained(base)
    tokenizer.save_pretrained(base)
    jsonl = tmp_path / "train.jsonl"
    write_jsonl(examples[:8], jsonl)
    card = train(_config(tmp_path, jsonl, mode="full", base_model=str(base), max_steps=2, learning_rate=1e-3))
    assert card["mode"] == "full" and card["trainable_parameters"] == card["parameters"]
    final = tmp_path / "run" / "final"
    before, after = load_file(str(base / "model.safetensors")), load_file(str(final / "model.safetensors"))
    assert before.keys() == after.keys()
    assert sum(not bool((before[k] == after[k]).all()) for k in before) > 0.9 * len(before)
    assert (final / "tokenizer.json").read_text() == (base / "tokenizer.json").read_text()
    predictor = Predictor.from_dir(final, "cpu")
    prediction = predictor.predict(parse_composition("NaCl", "cell"), "band_gap", 5.0, top_k=2)
    for record in prediction.records(predictor.model_name):
        validate_record(record)


def test_batched_group_decoding_equals_decoding_each_group_alone():
    """The predictor decodes its candidate groups in one left-padded beam search; padding (masked, positions
    from the mask) must give every group the answer it gets alone, token for token. Run with the embedded
    band-gap model: a random tiny model's answers hardly depend on the context, so they would not notice
    unmasked padding."""
    from llm_torch.predict import Predictor, default_model_dir
    from llm_torch.prompts import positions_line, space_group_line

    predictor = Predictor.from_dir(default_model_dir("band_gap"), neighbours=None)
    kwargs = dict(constrained=True, sample=False, num_beams=4, num_return=2, temperature=1.0)
    for formula in ("Ba2Ti2O6", "K2Cu2F6"):  # with all-ones masks instead, 4 and 3 of the 10 groups change
        spec = parse_composition(formula)
        grammar = OutputGrammar(spec)
        prompt = predictor.prompt_ids(spec, "band_gap", 2.0)
        prefixes = [space_group_line(g) + "\n" + positions_line(g) + "\n" for g in grammar.groups[:10]]
        items = [(prompt + predictor._encode(prefix), prefix) for prefix in prefixes]
        assert len({len(ids) for ids, _ in items}) > 1  # the batch really is padded
        batched = predictor._generate_batch(items, grammar, **kwargs)
        alone = [predictor._generate(ids, grammar, prefix, **kwargs) for ids, prefix in items]
        assert batched == alone
        assert all(grammar.accepts(text) for texts in batched for text in texts)


def test_prefilling_each_prompt_once_gives_the_same_answers_and_skips_the_copies():
    """``Predictor.prefill_once`` runs each item's prompt once and repeats its key/value cache over the beams
    (or samples) instead of letting ``generate`` prefill every copy. The answers must be those of the plain
    ``generate`` call, token for token, for beam search and for seeded sampling; and the long forward pass
    must see one row per item, not one per beam."""
    import functools

    import torch

    from llm_torch.predict import Predictor, default_model_dir
    from llm_torch.prompts import positions_line, space_group_line

    predictor = Predictor.from_dir(default_model_dir("band_gap"), neighbours=None)
    spec = parse_composition("Sr2Ti2O6")
    grammar = OutputGrammar(spec)
    prompt = predictor.prompt_ids(spec, "band_gap", 1.5)
    prefixes = [space_group_line(g) + "\n" + positions_line(g) + "\n" for g in grammar.groups[:6]]
    items = [(prompt + predictor._encode(prefix), prefix) for prefix in prefixes]
    assert len({len(ids) for ids, _ in items}) > 1  # padded batch

    rows_seen = []
    forward = predictor.model.forward

    @functools.wraps(forward)  # generate reads the signature (position_ids) through __wrapped__
    def recording_forward(*args, **kwargs):
        ids = kwargs.get("input_ids")
        if ids is not None and ids.shape[1] > 1:
            rows_seen.append(ids.shape[0])
        return forward(*args, **kwargs)

    predictor.model.forward = recording_forward
    try:
        for kwargs in (
            dict(sample=False, num_beams=4, num_return=2, temperature=1.0),
            dict(sample=True, num_beams=1, num_return=3, temperature=1.0),
        ):
            answers = {}
            for once in (False, True):
                predictor.prefill_once = once
                rows_seen.clear()
                torch.manual_seed(7)
                answers[once] = predictor._generate_batch(items, grammar, constrained=True, **kwargs)
                copies = kwargs["num_beams"] if not kwargs["sample"] else kwargs["num_return"]
                assert rows_seen == ([len(items)] if once else [len(items) * copies])
            assert answers[True] == answers[False], kwargs
            assert all(grammar.accepts(text) for texts in answers[True] for text in texts)
    finally:
        predictor.model.forward = forward


def test_predicting_many_compositions_together_gives_each_its_answer_alone():
    """``predict_many`` decodes the candidate groups of several compositions in shared, left-padded beam
    searches (each item with its own grammar); every query must get exactly the hypotheses, scores and
    order that ``predict`` gives it alone, including NaCl, whose few feasible groups need the seeded
    sampling top-up."""
    from llm_torch.predict import Predictor, default_model_dir

    predictor = Predictor.from_dir(default_model_dir("band_gap"), neighbours=None)
    queries = [
        (parse_composition("NaCl", "cell"), "band_gap", 5.0),
        (parse_composition("Ba2Ti2O6"), "band_gap", 2.0),
        (parse_composition("K2Cu2F6"), "band_gap", 0.5),
    ]
    together = predictor.predict_many(queries, top_k=4, seed=3, max_batch=7)  # chunks span compositions
    for query, many in zip(queries, together):
        alone = predictor.predict(*query, top_k=4, seed=3)
        assert [h.output_text for h in many.hypotheses] == [h.output_text for h in alone.hypotheses]
        assert [h.score for h in many.hypotheses] == pytest.approx(
            [h.score for h in alone.hypotheses], abs=1e-4
        )
        assert many.spec == alone.spec and many.value == alone.value
    assert len(together[0].hypotheses) == 4  # NaCl: filled up by sampling
