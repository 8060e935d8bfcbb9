"""Evaluation of trained runs (dit.evaluate): the validation protocol's spread over noise seeds, the
caption-conditioning gain, and the refusal of missing or unfinished runs. The tests use the suite's
real prepared data set and its real tiny dit.train run (tests/conftest.py)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from dit import evaluate
from dit.data.loader import ShardDataset
from dit.data.synthetic import caption_contrast_words
from dit.text import CaptionTokenizer
from dit.distributed import resolve_precision


@pytest.fixture(scope="module")
def trained_run(tiny_run) -> Path:
    """The suite's tiny run (tests/conftest.py); tests copy it before changing it."""
    return tiny_run


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def validation_clips(run: Path) -> int:
    config = yaml.safe_load((run / "config.yaml").read_text())
    return len(ShardDataset(config["data"]["root"], "validation"))


# --------------------------------------------------------------------------------------------------
# spread
# --------------------------------------------------------------------------------------------------


def test_spread_reports_per_seed_losses_and_reproduces_the_recorded_validation_loss(trained_run, tmp_path):
    out = tmp_path / "spread.json"
    assert evaluate.main(["spread", "--run", str(trained_run), "--seeds", "4", "--out", str(out), "--device", "cpu"]) == 0
    record = read_json(out)
    summary = read_json(trained_run / "summary.json")

    assert record["kind"] == "validation_loss_spread"
    assert record["seeds"] == [0, 1, 2, 3]
    values = [record["per_seed"][str(seed)] for seed in range(4)]
    assert len(set(values)) == 4 and record["std"] > 0
    assert record["mean"] == pytest.approx(sum(values) / 4)
    assert record["min"] == min(values) and record["max"] == max(values)
    assert record["relative_std"] == pytest.approx(record["std"] / record["mean"])
    # Seed 0 is the run's own validation seed: the loss it recorded at its last milestone. The run validated
    # with the member-axis model (dit.ensemble) and evaluation uses VideoDiT: equal up to float32 rounding.
    assert math.isclose(record["per_seed"]["0"], summary["final_validation_loss"], rel_tol=1e-6)
    assert record["validation"] == {
        "split": "validation", "clips": validation_clips(trained_run), "timesteps": 4, "max_clips": None, "batch_clips": 4, "run_seed": 0,
    }
    assert record["run"]["run_id"] == summary["run_id"] and record["run"]["tokens"] == summary["tokens"] == 10240
    assert record["run"]["device"] == "cpu" and record["run"]["precision"] == "fp32"
    assert record["provenance"]["packages"]["torch"] and record["provenance"]["config"]["command"] == "spread"


def test_spread_is_deterministic_per_seed_and_honours_max_clips(trained_run, tmp_path):
    run = evaluate.open_trained_run(trained_run, "cpu")
    first = evaluate.validation_spread(run, [3, 5])
    again = evaluate.validation_spread(run, [5, 3, 8])
    assert first["per_seed"]["3"] == again["per_seed"]["3"]
    assert first["per_seed"]["5"] == again["per_seed"]["5"]

    run.config.validation.max_clips = 3
    limited = evaluate.validation_spread(run, [3, 5])
    assert limited["validation"]["clips"] == 3 and limited["per_seed"]["3"] != first["per_seed"]["3"]


# --------------------------------------------------------------------------------------------------
# captions
# --------------------------------------------------------------------------------------------------


def test_captions_compares_captions_null_and_shuffled_on_the_same_noise(trained_run, tmp_path):
    out = tmp_path / "captions.json"
    assert evaluate.main(["captions", "--run", str(trained_run), "--out", str(out), "--shuffled", "--seeds", "2",
                          "--device", "cpu"]) == 0
    record = read_json(out)
    summary = read_json(trained_run / "summary.json")

    assert record["kind"] == "caption_conditioning" and record["seeds"] == [0, 1]
    conditions = record["conditions"]
    assert sorted(conditions) == ["captions", "null", "shuffled"]
    assert math.isclose(conditions["captions"]["per_seed"]["0"], summary["final_validation_loss"], rel_tol=1e-6)
    for name in ("null", "shuffled"):
        difference = record["differences"][f"{name}_minus_captions"]
        for seed in ("0", "1"):
            expected = conditions[name]["per_seed"][seed] - conditions["captions"]["per_seed"][seed]
            assert difference["per_seed"][seed] == pytest.approx(expected, abs=1e-15)
        assert difference["mean"] == pytest.approx(conditions[name]["mean"] - conditions["captions"]["mean"], abs=1e-15)
        assert sorted(conditions[name]["per_timestep"]["0"]) == ["125", "375", "625", "875"]
    assert record["validation"]["clips"] == validation_clips(trained_run)

    # Without --shuffled only the two required conditions are evaluated, on the same noise as above.
    plain = tmp_path / "plain.json"
    assert evaluate.main(["captions", "--run", str(trained_run), "--out", str(plain), "--device", "cpu"]) == 0
    plain_record = read_json(plain)
    assert sorted(plain_record["conditions"]) == ["captions", "null"]
    assert plain_record["conditions"]["null"]["per_seed"]["0"] == conditions["null"]["per_seed"]["0"]


def test_caption_conditions_replace_the_captions_they_claim(trained_run):
    run = evaluate.open_trained_run(trained_run, "cpu")
    dataset = run.validation_split()
    null = torch.as_tensor(dataset.tokenizer.encode(""), dtype=torch.long)
    original = {int(i): ids for b in run.validation_batches(dataset)() for i, ids in zip(b["index"], b["caption_ids"])}

    null_batches = list(evaluate.caption_condition_batches(run, dataset, "null")())
    assert sum(len(b["index"]) for b in null_batches) == len(dataset) == len(original) > 2
    for batch in null_batches:
        assert torch.equal(batch["caption_ids"], null.expand(len(batch["index"]), -1))
        assert torch.equal(batch["caption_mask"], batch["caption_ids"] != 0)
        assert int(batch["caption_mask"].sum()) == len(batch["index"])  # the begin token only

    shuffled = {
        int(i): ids for b in evaluate.caption_condition_batches(run, dataset, "shuffled")() for i, ids in
        zip(b["index"], b["caption_ids"])
    }
    assert sorted(shuffled) == sorted(original)
    assert all(not torch.equal(shuffled[i], original[i]) for i in original)  # no clip keeps its caption
    as_rows = lambda table: sorted(tuple(ids.tolist()) for ids in table.values())  # noqa: E731
    assert as_rows(shuffled) == as_rows(original)  # the same captions, moved


def _rewritten(text: str, swap: dict[str, str], exchange: set[str]) -> str:
    """``text``'s words with ``swap`` applied to each, then the first two words of ``exchange`` trading places."""
    words = [swap.get(word, word) for word in CaptionTokenizer.words(text)]
    at = [i for i, word in enumerate(words) if word in exchange][:2]
    if len(at) == 2:
        words[at[0]], words[at[1]] = words[at[1]], words[at[0]]
    return " ".join(words)


def test_caption_contrasts_change_exactly_the_words_they_name(trained_run, tmp_path):
    """The swapped and exchanged captions, id by id, against the clips' caption texts rewritten word by word and
    encoded again; the counts of changed captions and the differences the command writes."""
    words = caption_contrast_words()
    assert words["swap"] == [["down", "up"], ["left", "right"]] and len(words["exchange"]) == 8
    partner = {a: b for pair in words["swap"] for a, b in (pair, pair[::-1])}
    run = evaluate.open_trained_run(trained_run, "cpu")
    dataset = run.validation_split()
    texts, tokenizer = dataset.captions, dataset.tokenizer
    contrasts = evaluate.CaptionContrasts(swap=tuple(map(tuple, words["swap"])), exchange=tuple(words["exchange"]))
    changed = {}
    for condition, swap, exchange in (("swapped", partner, set()), ("exchanged", {}, set(words["exchange"]))):
        changed[condition] = 0
        for batch in evaluate.caption_condition_batches(run, dataset, condition, contrasts=contrasts)():
            for index, ids, mask in zip(batch["index"].tolist(), batch["caption_ids"], batch["caption_mask"]):
                expected = tokenizer.encode(_rewritten(texts[index], swap, exchange))
                assert ids.tolist() == expected.tolist()
                assert torch.equal(mask, ids != 0)
                changed[condition] += _rewritten(texts[index], swap, exchange) != _rewritten(texts[index], {}, set())
    assert changed["swapped"] == changed["exchanged"] == len(dataset) > 2  # every embedded caption has both

    out = tmp_path / "contrasts.json"
    arguments = ["--swap", "down:up", "--swap", "left:right", "--exchange", ",".join(words["exchange"])]
    assert evaluate.main(["captions", "--run", str(trained_run), "--out", str(out), "--device", "cpu", *arguments]) == 0
    record = read_json(out)
    assert record["contrasts"] == {"swapped": {"pairs": words["swap"], "clips_changed": changed["swapped"]},
                                   "exchanged": {"words": words["exchange"], "clips_changed": changed["exchanged"]}}
    conditions = record["conditions"]
    for name in ("swapped", "exchanged"):
        difference = record["differences"][f"{name}_minus_captions"]
        assert difference["mean"] == pytest.approx(conditions[name]["mean"] - conditions["captions"]["mean"], abs=1e-15)
        assert difference["relative"] == pytest.approx(difference["mean"] / conditions[name]["mean"])
        assert conditions[name]["mean"] != conditions["captions"]["mean"]
    assert record["provenance"]["config"]["swapped"]["pairs"] == words["swap"]


@pytest.mark.parametrize("arguments, message", [
    (["--swap", "left"], "expected two words as A:B"),
    (["--swap", "left:left"], "one pair only"),
    (["--swap", "left:right", "--swap", "right:up"], "one pair only"),
    (["--swap", "left:moves right"], "is not one caption word"),
    (["--exchange", "red"], "two or more words"),
    (["--exchange", "red,red"], "share a token id"),
])
def test_malformed_caption_contrasts_are_refused(trained_run, tmp_path, capsys, arguments, message):
    out = tmp_path / "contrasts.json"
    assert evaluate.main(["captions", "--run", str(trained_run), "--out", str(out), "--device", "cpu", *arguments]) == 2
    assert message in capsys.readouterr().err and not out.exists()


def test_shuffled_caption_order_is_a_seeded_cycle():
    clips = [4, 9, 2, 7, 5]
    donor = evaluate.shuffled_caption_order(clips, seed=1)
    assert sorted(donor) == sorted(clips) and sorted(donor.values()) == sorted(clips)
    assert all(donor[c] != c for c in clips)
    assert donor == evaluate.shuffled_caption_order(clips, seed=1)
    with pytest.raises(evaluate.EvaluationInputError, match="at least two clips"):
        evaluate.shuffled_caption_order([3], seed=0)


# --------------------------------------------------------------------------------------------------
# refused runs
# --------------------------------------------------------------------------------------------------


def copy_run(run: Path, destination: Path) -> Path:
    shutil.copytree(run, destination)
    return destination


def test_a_missing_run_is_refused_with_its_path(tmp_path, capsys):
    missing = tmp_path / "no-such-run"
    for command in ("spread", "captions"):
        assert evaluate.main([command, "--run", str(missing), "--out", str(tmp_path / "x.json")]) == 2
        assert f"dit.evaluate {command}: {missing}: no such run folder" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


@pytest.mark.parametrize(
    "status, reason, expected",
    [
        (None, None, "has not finished (no summary.json yet)"),
        ("preempted", "stopped by SIGTERM at step 2", "status is 'preempted', not 'completed': stopped by SIGTERM"),
        ("diverged", "training loss nan at step 3", "status is 'diverged', not 'completed': training loss nan"),
        ("failed", "RuntimeError: boom", "status is 'failed', not 'completed': RuntimeError: boom"),
    ],
)
def test_an_unfinished_or_unsuccessful_run_is_refused(trained_run, tmp_path, capsys, status, reason, expected):
    run = copy_run(trained_run, tmp_path / "run")
    summary_path = run / "summary.json"
    if status is None:
        summary_path.unlink()
    else:
        summary = read_json(summary_path)
        summary.update(status=status, status_reason=reason)
        summary_path.write_text(json.dumps(summary))
    for command in ("spread", "captions"):
        out = tmp_path / f"{command}.json"
        assert evaluate.main([command, "--run", str(run), "--out", str(out)]) == evaluate.EXIT_INPUT_ERROR
        message = capsys.readouterr().err
        assert str(summary_path) in message and expected in message
        assert not out.exists()


def test_a_completed_run_without_its_model_or_config_is_refused(trained_run, tmp_path, capsys):
    run = copy_run(trained_run, tmp_path / "run")
    checkpoint = run / "checkpoints" / "model.pt"
    checkpoint.unlink()
    assert evaluate.main(["spread", "--run", str(run), "--out", str(tmp_path / "a.json")]) == 2
    assert f"{checkpoint}: missing" in capsys.readouterr().err
    (run / "config.yaml").unlink()
    assert evaluate.main(["captions", "--run", str(run), "--out", str(tmp_path / "b.json")]) == 2
    assert f"{run / 'config.yaml'}: missing" in capsys.readouterr().err


def test_bad_arguments_are_refused(trained_run, tmp_path, capsys):
    out = tmp_path / "x.json"
    assert evaluate.main(["spread", "--run", str(trained_run), "--seeds", "1", "--out", str(out)]) == 2
    assert "--seeds must be at least 2" in capsys.readouterr().err
    assert evaluate.main(["spread", "--run", str(trained_run), "--device", "tpu", "--out", str(out)]) == 2
    assert "--device 'tpu'" in capsys.readouterr().err
    assert not out.exists()


def test_xformers_runs_are_evaluated_with_sdpa_on_a_cpu():
    cpu = torch.device("cpu")
    assert evaluate.evaluation_attention("xformers", cpu) == "sdpa"
    assert evaluate.evaluation_attention("math", cpu) == "math"
    assert evaluate.evaluation_attention("xformers", torch.device("cuda")) == "xformers"
    assert resolve_precision("auto", cpu) == "fp32"
    assert resolve_precision("auto", torch.device("cuda")) == "bf16"


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_cpu_trained_run_evaluates_on_cuda_close_to_the_cpu(trained_run):
    cpu = evaluate.validation_spread(evaluate.open_trained_run(trained_run, "cpu"), [0, 1])
    cuda_run = evaluate.open_trained_run(trained_run, "cuda")
    assert cuda_run.precision == "bf16" and cuda_run.device.type == "cuda"
    cuda = evaluate.validation_spread(cuda_run, [0, 1])
    for seed in ("0", "1"):
        assert cuda["per_seed"][seed] == pytest.approx(cpu["per_seed"][seed], rel=2e-2)


# --------------------------------------------------------------------------------------------------
# captions carry information the model uses
# --------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_captions_lower_the_validation_loss_by_more_than_the_protocol_spread(caption_gain_run, tmp_path):
    """tiny-590k, 1,500 steps of 16 one-object clips (tests/caption_gain.py has the settings and why)."""
    run, process = caption_gain_run
    result = process.wait()
    assert result.returncode == 0, f"the caption-gain run failed ({result.returncode}):\n{result.tail(3000)}"
    spread_path, captions_path = tmp_path / "spread.json", tmp_path / "captions.json"
    assert evaluate.main(["spread", "--run", str(run), "--seeds", "4", "--out", str(spread_path)]) == 0
    assert evaluate.main(["captions", "--run", str(run), "--shuffled", "--out", str(captions_path)]) == 0
    spread, captions = read_json(spread_path), read_json(captions_path)

    assert captions["validation"]["clips"] == spread["validation"]["clips"] == validation_clips(run) > 100
    assert captions["conditions"]["captions"]["mean"] == spread["per_seed"]["0"]
    gain = captions["differences"]["null_minus_captions"]["mean"]
    shuffled_gain = captions["differences"]["shuffled_minus_captions"]["mean"]
    print(f"caption gain {gain:.6f}, shuffled-caption gain {shuffled_gain:.6f}, protocol spread {spread['std']:.6f}")
    assert gain > 3 * spread["std"] > 0
    assert shuffled_gain > 3 * spread["std"]  # another clip's caption is worse than its own
