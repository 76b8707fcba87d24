"""CLIs of the symmetry predictor (errors, no model needed), ROUGE and the LM-free baselines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llm_torch.constraints import CompositionSpec, check_assignment
from llm_torch.evaluate import (
    MostFrequentBaseline,
    NearestCompositionBaseline,
    evaluate_predictor,
    rouge_l,
    rouge_n,
)
from llm_torch.predict import CHECKPOINT_DIR

REPO = Path(__file__).resolve().parents[1]


def run_predict(*args, cwd=REPO):
    return subprocess.run(
        [sys.executable, "-m", "llm_torch.predict", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--formula", "Xx2O", "--band-gap", "1.0"], "unknown element 'Xx'"),
        (["--formula", "", "--band-gap", "1.0"], "empty formula"),
        (["--formula", "NaCl"], "exactly one target"),
        (["--formula", "NaCl", "--band-gap", "1", "--formation-energy", "-1"], "exactly one target"),
        (["--formula", "NaCl", "--band-gap", "nan"], "finite"),
        (["--formula", "H500", "--band-gap", "1"], "at most"),
        (["--formula", "NaCl", "--band-gap", "1", "--prior-weight", "-1"], "--prior-weight"),
        (["--formula", "NaCl", "--band-gap", "1", "--num-beams", "0"], "--num-beams"),
        (
            ["--formula", "NaCl", "--band-gap", "1", "--neighbours", "missing.npz"],
            "cannot read composition table",
        ),
    ],
)
def test_predict_bad_input(tmp_path, args, fragment):
    out = tmp_path / "out.jsonl"
    result = run_predict(*args, "--out", str(out))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], result.stderr
    assert result.stdout == "" and not out.exists()


def test_predict_batch_bad_row(tmp_path):
    inputs = tmp_path / "in.csv"
    inputs.write_text("formula,band_gap\nNaCl,5.0\nXx,1.0\n")
    out = tmp_path / "out.jsonl"
    result = run_predict("--csv", str(inputs), "--out", str(out))
    assert (
        result.returncode == 1
        and "in.csv:3" in result.stderr
        and len(result.stderr.strip().splitlines()) == 1
    )
    assert not out.exists()


def test_predict_batch_writes_every_row_with_a_progress_bar(tmp_path):
    inputs = tmp_path / "in.csv"
    inputs.write_text("id,formula,band_gap\nsalt,NaCl,5.0\nmagnesia,MgO,4.0\n")
    out = tmp_path / "out.jsonl"
    result = run_predict("--csv", str(inputs), "--top-k", "1", "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["provenance"]["id"] for r in records] == ["salt", "magnesia"]
    assert [set(r["composition"]) for r in records] == [{"Na", "Cl"}, {"Mg", "O"}]
    assert "rows: 100%" in result.stderr.replace("\r", "\n") and "2/2" in result.stderr
    assert not list(tmp_path.glob(".*partial"))


@pytest.mark.skipif(
    (CHECKPOINT_DIR / "small_glm4_bg" / "model_card.json").exists(), reason="an embedded model exists"
)
def test_predict_without_model_says_so(tmp_path):
    result = run_predict("--formula", "LiFePO4", "--band-gap", "3.0")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no embedded model" in lines[0] and "--model" in lines[0]


def test_rouge_hand_computed():
    # 6 tokens each; unigram overlap the x2, cat, on, mat = 5
    r1 = rouge_n("the cat sat on the mat", "the cat is on the mat", 1)
    assert (
        r1["precision"] == pytest.approx(5 / 6)
        and r1["recall"] == pytest.approx(5 / 6)
        and r1["f1"] == pytest.approx(5 / 6)
    )
    # bigrams: {the cat, on the, the mat} shared out of 5 each
    assert rouge_n("the cat sat on the mat", "the cat is on the mat", 2)["f1"] == pytest.approx(3 / 5)
    # LCS = "the cat on the mat" (5 tokens)
    assert rouge_l("the cat sat on the mat", "the cat is on the mat")["f1"] == pytest.approx(5 / 6)
    # asymmetric: P = 2/4, R = 2/3 -> F1 = 4/7
    assert rouge_n("a b c d", "a c e", 1)["f1"] == pytest.approx(4 / 7)
    assert rouge_l("a b c d", "a c e")["f1"] == pytest.approx(4 / 7)
    assert rouge_n("a b c d", "a c e", 2)["f1"] == 0.0
    # clipping: "the" counts at most once -> P = 1/3, R = 1/2, F1 = 0.4
    assert rouge_n("the the the", "the cat", 1)["f1"] == pytest.approx(0.4)
    assert rouge_l("", "a")["f1"] == 0.0


@pytest.fixture(scope="module")
def records(fixture_dataset):
    dataset, _ = fixture_dataset
    return [dataset[i].to_record(source="mp_20") for i in range(len(dataset))]


def test_baselines_give_valid_feasible_guesses(records):
    frequent = MostFrequentBaseline(records)
    assert frequent.order[0] == 225  # the fixture's most common group
    nearest = NearestCompositionBaseline(records)
    for record in records[:25]:
        spec = CompositionSpec.from_counts(record.composition.counts)
        for baseline in (frequent, nearest):
            guesses = baseline.predict(spec, "band_gap", record.property("band_gap"), top_k=5)
            assert 1 <= len(guesses) <= 5 and len({g.space_group for g in guesses}) == len(guesses)
            for g in guesses:
                assert check_assignment(g.space_group, spec, g.assignment)
    # on its own training data the nearest composition is the crystal itself (or a polymorph
    # with the same composition; the property breaks the tie)
    metrics = evaluate_predictor(nearest, records[:40], "band_gap")
    assert metrics["sg_top1"] >= 0.95 and metrics["rouge1"] >= 0.95 and metrics["rows"] == 40


def test_evaluate_cli_baselines(tmp_path, monkeypatch, records):
    from llm_torch import dataset
    from llm_torch.evaluate import main

    monkeypatch.setattr(
        dataset, "csv_records", lambda path, limit=None, **kw: records[:limit] if limit else records
    )
    out = tmp_path / "results.json"
    assert (
        main(
            [
                "--csv",
                "fixture.csv",
                "--limit",
                "20",
                "--train-csv",
                "fixture.csv",
                "--baselines-only",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    payload = json.loads(out.read_text())
    assert set(payload["results"]) == {"most_frequent", "nearest_composition"}
    assert payload["results"]["most_frequent"]["rows"] == 20
    assert payload["data"]["composition_mode"] == "cell" and payload["command"].startswith(
        "python -m llm_torch.evaluate"
    )
    assert payload["machine"]["cpu_count"] >= 1 and payload["date"].startswith(
        "20"
    )  # where and when, beside the numbers
    assert payload["model"] is None  # no language model was evaluated


def test_csv_records_offset_counts_the_same_rows_with_and_without_the_cache(
    tmp_path, monkeypatch, fixture_csv
):
    from llm_torch.dataset import csv_records

    monkeypatch.setenv("UNIMDM_CACHE", str(tmp_path / "cache"))
    head = csv_records(fixture_csv, limit=5)  # no cache: symmetrizes only these rows
    assert not list((tmp_path / "cache").glob("*.npz"))
    assert csv_records(fixture_csv, limit=3, offset=2) == head[2:5]  # a shard: caches the whole file
    assert len(list((tmp_path / "cache").glob(f"{fixture_csv.name}.*.npz"))) == 1
    whole = csv_records(fixture_csv)
    assert whole[:5] == head and len(whole) == 200
    assert csv_records(fixture_csv, limit=3, offset=2) == head[2:5]
    assert csv_records(fixture_csv, offset=198) == whole[198:]
    with pytest.raises(ValueError, match="offset"):
        csv_records(fixture_csv, limit=1, offset=-1)


def test_evaluate_shards_merge_to_the_whole_evaluation(tmp_path, monkeypatch, records, capsys):
    """Two shards (--offset/--limit) merged with --merge give the metrics of one run over all rows."""
    from llm_torch import dataset
    from llm_torch.evaluate import main

    def rows(path, limit=None, offset=0, **kw):
        return records[offset : None if limit is None else offset + limit]

    monkeypatch.setattr(dataset, "csv_records", rows)
    common = ["--csv", "fixture.csv", "--train-csv", "fixture.csv", "--baselines-only"]
    whole, a, b, merged = (tmp_path / f"{n}.json" for n in ("whole", "a", "b", "merged"))
    assert main([*common, "--limit", "40", "--out", str(whole)]) == 0
    assert main([*common, "--limit", "15", "--out", str(a)]) == 0
    assert main([*common, "--offset", "15", "--limit", "25", "--out", str(b)]) == 0
    assert main(["--merge", str(b), str(a), "--out", str(merged)]) == 0
    expected, got = json.loads(whole.read_text()), json.loads(merged.read_text())
    assert (
        got["data"]["offset"] == 0
        and got["data"]["limit"] == 40
        and got["data"]["row_ranges"] == [[0, 15], [15, 40]]
    )
    for method, metrics in expected["results"].items():
        for key in (
            "rouge1",
            "rouge2",
            "rougeL",
            "sg_top1",
            "sg_top5",
            "wyckoff_exact",
            "validity",
            "repair_rate",
            "rows",
            "hypotheses",
        ):
            assert got["results"][method][key] == pytest.approx(metrics[key], abs=1e-12), (method, key)
    assert [s["rows"] for s in got["shards"]] == [[0, 15], [15, 40]]
    capsys.readouterr()
    # overlapping shards, or shards of another ranking, are refused with one line
    assert main(["--merge", str(a), str(whole), "--out", str(tmp_path / "x.json")]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: shards overlap: rows 0-15 and 0-40 (0-based, end exclusive)"
    ]
    other = json.loads(b.read_text())
    other["ranking"]["num_beams"] = 99
    b.write_text(json.dumps(other))
    assert main(["--merge", str(a), str(b), "--out", str(tmp_path / "y.json")]) == 1
    assert "ranking" in capsys.readouterr().err
    b.write_text("{broken")
    assert main(["--merge", str(a), str(b), "--out", str(tmp_path / "z.json")]) == 1
    assert capsys.readouterr().err.startswith(f"error: cannot read results file {b}")
    assert not (tmp_path / "x.json").exists() and not (tmp_path / "z.json").exists()
    # an offset past the end of the file is an error, not a table of NaNs
    assert main([*common, "--offset", "500", "--out", str(tmp_path / "past.json")]) == 1
    assert capsys.readouterr().err.strip() == "error: no rows to evaluate in fixture.csv after --offset 500"
    assert not (tmp_path / "past.json").exists()


def test_evaluate_writes_per_row_predictions_that_agree_with_its_metrics(tmp_path, monkeypatch, records):
    """--predictions: one JSON line per evaluated row (row numbers counted from the file start) with the
    truth and every scored hypothesis; the first hypothesis of each row reproduces the reported top-1,
    and each score is log-probability + log(p_nn + floor) of the embedded composition table."""
    import math

    from llm_torch import dataset
    from llm_torch.evaluate import main
    from llm_torch.neighbours import DEFAULT_TABLE, CompositionNeighbours

    folder = CHECKPOINT_DIR / "small_glm4_bg"
    if not (folder / "model_card.json").exists():
        pytest.skip("no embedded band-gap model")
    monkeypatch.setattr(
        dataset,
        "csv_records",
        lambda path, limit=None, offset=0, **kw: records[offset : None if limit is None else offset + limit],
    )
    out, predictions = tmp_path / "r.json", tmp_path / "rows.jsonl"
    assert (
        main(
            [
                "--csv",
                "fixture.csv",
                "--train-csv",
                "fixture.csv",
                "--offset",
                "3",
                "--limit",
                "3",
                "--model",
                str(folder),
                "--num-beams",
                "1",
                "--candidates",
                "6",
                "--out",
                str(out),
                "--predictions",
                str(predictions),
            ]
        )
        == 0
    )
    rows = [json.loads(line) for line in predictions.read_text().splitlines()]
    assert [r["row"] for r in rows] == [3, 4, 5]
    table = CompositionNeighbours.load(DEFAULT_TABLE)
    for row in rows:
        record = records[row["row"]]
        assert row["space_group"] == record.space_group.number and row["value"] == record.property("band_gap")
        scores = [h["score"] for h in row["hypotheses"]]
        assert len(scores) >= 5 and scores == sorted(scores, reverse=True)
        groups = {h["space_group"] for h in row["hypotheses"]}
        logs = table.log_prior(
            record.composition.counts,
            groups,
            k=50,
            tau=0.2,
            floor=1e-3,
            property_name="band_gap",
            target=row["value"],
        )
        for h in row["hypotheses"]:
            assert h["score"] == pytest.approx(h["logprob"] + logs[h["space_group"]], abs=1e-4)
    metrics = json.loads(out.read_text())["results"]["lm:small_glm4_bg"]
    assert metrics["sg_top1"] == pytest.approx(
        sum(r["hypotheses"][0]["space_group"] == r["space_group"] for r in rows) / 3
    )
    assert json.loads(out.read_text())["ranking"]["prior_tie_break"] == "property"
    assert math.isfinite(metrics["rouge1"])


def test_model_identity_names_the_weights_by_their_sha256(tmp_path):
    """The results file names the evaluated weights by content: SHA-256 of b"abc" is the FIPS 180-2
    test vector."""
    from llm_torch.evaluate import model_identity

    (tmp_path / "model.safetensors").write_bytes(b"abc")
    (tmp_path / "model_card.json").write_text(json.dumps({"name": "m", "command": "train it", "metrics": {}}))
    identity = model_identity(tmp_path)
    assert identity["weights_sha256"] == {
        "model.safetensors": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    }
    assert identity["card"] == {"name": "m", "command": "train it"}
    (tmp_path / "model_card.json").write_text("{not json")
    assert model_identity(tmp_path)["card"] is None


EMBEDDED = [
    ("small_glm4_bg", "band_gap", "--band-gap", 3.0),
    ("small_glm4_fm", "formation_energy_per_atom", "--formation-energy", -2.1),
]


@pytest.mark.parametrize("name, prop, flag, value", EMBEDDED, ids=[e[0] for e in EMBEDDED])
def test_embedded_model_is_small_documented_and_predicts_valid_records(tmp_path, name, prop, flag, value):
    """A shipped symmetry predictor: < 25 MB of safetensors, a model card, and top-k records
    that pass the schema validator and keep the requested cell counts."""
    from unimdm_jax import schema

    folder = CHECKPOINT_DIR / name
    if not (folder / "model_card.json").exists():
        pytest.skip(f"no embedded model {name}")
    weights = list(folder.glob("*.safetensors"))
    assert weights and all(w.stat().st_size < 25 * 2**20 for w in weights)
    assert not list(folder.glob("*.bin")) and not list(folder.glob("*.pt")), "no pickled weights"
    card = json.loads((folder / "model_card.json").read_text())
    assert card["property_name"] == prop and card["command"] and card["hardware"] and card["data"]["train"]

    out = tmp_path / "h.jsonl"
    result = run_predict("--formula", "Li4Fe4P4O16", flag, str(value), "--top-k", "3", "--out", str(out))
    assert result.returncode == 0, result.stderr
    records = schema.load_records(out)
    assert 1 <= len(records) <= 3
    assert [r.provenance.rank for r in records] == list(range(1, len(records) + 1))
    scores = [r.provenance.score for r in records]
    assert scores == sorted(scores, reverse=True)
    for record in records:
        assert record.composition.counts == {"Li": 4, "Fe": 4, "P": 4, "O": 16}
        assert record.property(prop) == value


def test_merge_names_one_model_evaluated_from_two_folders_as_one_method():
    """Shards of the same weights (SHA-256) from different folders (an export and its embedded copy)
    merge into one method, named as most shards name it; different weights are still refused."""
    from llm_torch.evaluate import ROW_AVERAGES, merge_results

    def shard(offset, rows, folder, top1, sha="abc"):
        metrics = {k: 0.5 for k in ROW_AVERAGES} | {
            "sg_top1": top1,
            "rows": rows,
            "hypotheses": 5 * rows,
            "repair_rate": 0.0,
            "seconds": 1.0,
        }
        return {
            "data": {
                "rows": "test.csv",
                "train": "train",
                "property": "band_gap",
                "composition_mode": "cell",
                "offset": offset,
                "records": rows,
            },
            "ranking": {"num_beams": 4},
            "model": {"path": folder, "weights_sha256": {"model.safetensors": sha}},
            "results": {"most_frequent": dict(metrics), f"lm:{folder}": dict(metrics)},
        }

    merged = merge_results(
        [shard(0, 100, "export", 0.6), shard(100, 50, "embedded", 0.9), shard(150, 50, "embedded", 0.3)]
    )
    assert set(merged["results"]) == {"most_frequent", "lm:embedded"}
    assert merged["results"]["lm:embedded"]["rows"] == 200
    assert merged["results"]["lm:embedded"]["sg_top1"] == pytest.approx((60 + 45 + 15) / 200)
    assert merged["model"]["path"] == "embedded"  # the folder the method is named after
    with pytest.raises(ValueError, match="different weights"):
        merge_results([shard(0, 100, "export", 0.6), shard(100, 50, "embedded", 0.9, sha="other")])
