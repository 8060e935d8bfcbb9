"""Bad input to the pipeline and dit command lines: one clear message, exit status 2 (1 for pipeline.collect's
unreadable run folders, as its other refusals), and nothing written or changed.

Runs, checkpoints and prepared data are the suite's shared ones (``tiny_run``, ``prepared_data``), copied before
anything in them is changed; nothing here trains a model.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from dit import caption_match, evaluate, noise_sources, sample, train
from dit.data.__main__ import main as data_main
from dit.latent import CodecError, LatentCodec
from dit.latent import main as latent_main
from dit.run_folder import ModelFileError, load_trained_model
from pipeline import collect, performance
from pipeline import config as pipeline_config
from training_runs import tiny_run_config, write_config

REPOSITORY = Path(__file__).resolve().parent.parent
OLD = b"an earlier output\n"


def copy_run(run: Path, destination: Path) -> Path:
    shutil.copytree(run, destination)
    return destination


def earlier_output(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(OLD)
    return path


def one_line_error(capsys, prefix: str, *words: str) -> str:
    """The command's stderr: one line starting with ``prefix`` that holds each of ``words``; no traceback."""
    error = capsys.readouterr().err.strip()
    assert "Traceback" not in error and len(error.splitlines()) == 1, error
    assert error.startswith(prefix) and all(word in error for word in words), error
    return error


# ---------------------------------------------------------------------------------------- pipeline.config


@pytest.mark.parametrize("text, words", [('{"a":', ["not valid JSON"]), ("[1]", ["must be a JSON object", "[1]"]),
                                         ("null", ["must be a JSON object", "null"])],
                         ids=["truncated", "list", "null"])
def test_fit_config_refuses_fit_json_that_is_not_an_object(tmp_path, capsys, text, words):
    out = earlier_output(tmp_path / "fit.yaml")
    assert pipeline_config.main(["fit-config", "--fit-json", text, "--out", str(out)]) == 2
    one_line_error(capsys, "pipeline.config: ", "--fit-json", *words)
    assert out.read_bytes() == OLD


def test_fit_config_refuses_an_out_that_is_its_config(tmp_path, capsys):
    config = tmp_path / "test.yaml"
    shutil.copyfile(REPOSITORY / "config" / "test.yaml", config)
    before = config.read_bytes()
    assert pipeline_config.main(["fit-config", "--config", str(config), "--out", str(config)]) == 2
    one_line_error(capsys, "pipeline.config: ", str(config), "also an input")
    assert config.read_bytes() == before


# ---------------------------------------------------------------------------------------- pipeline.collect


def _set_summary(run: Path, **changes) -> None:
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, **changes}))


def _set_metrics_cell(run: Path, column: str, value: str) -> None:
    lines = (run / "metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    cells = lines[1].split(",")
    cells[header.index(column)] = value
    (run / "metrics.csv").write_text("\n".join([lines[0], ",".join(cells), *lines[2:]]) + "\n")


def _truncate_metrics(run: Path) -> None:
    text = (run / "metrics.csv").read_bytes()
    (run / "metrics.csv").write_bytes(text[: text.index(b"\n") + 40])  # the header and the start of the first row


def _metrics_folder(run: Path) -> None:
    (run / "metrics.csv").unlink()
    (run / "metrics.csv").mkdir()


def _drop_last_row(run: Path) -> None:
    lines = (run / "metrics.csv").read_text().splitlines()
    (run / "metrics.csv").write_text("\n".join(lines[:-1]) + "\n")


def _diverged_missing_a_row(run: Path) -> None:
    """A run that diverged after its 3rd milestone (its summary counts 3 rows) whose metrics file lost the 3rd."""
    lines = (run / "metrics.csv").read_text().splitlines()
    (run / "metrics.csv").write_text("\n".join(lines[:3]) + "\n")
    _set_summary(run, status="diverged", status_reason="non-finite training loss", milestones_reached=3)


@pytest.mark.parametrize(
    "damage, file, words",
    [
        (_truncate_metrics, "metrics.csv", ["row 1", "no value", "truncated"]),
        (lambda run: (run / "summary.json").write_text("null"), "summary.json", ["not a run summary"]),
        (_metrics_folder, "metrics.csv", ["cannot read"]),
        (lambda run: _set_summary(run, series="bogus"), "summary.json", ["series", "'bogus'"]),
        (lambda run: _set_summary(run, batch_clips="abc"), "summary.json", ["batch_clips", "'abc'"]),
        (lambda run: _set_summary(run, batch_clips=-1), "summary.json", ["batch_clips", "-1"]),
        (lambda run: _set_metrics_cell(run, "step", "4.5"), "metrics.csv", ["row 1", "step", "whole number"]),
        (_drop_last_row, "metrics.csv", ["3 milestone rows", "milestones_reached=4"]),
        (_diverged_missing_a_row, "metrics.csv", ["2 milestone rows", "milestones_reached=3"]),
    ],
    ids=["truncated-metrics", "null-summary", "metrics-folder", "bogus-series", "text-batch", "negative-batch",
         "fractional-step", "fewer-rows", "diverged-fewer-rows"],
)
def test_collect_refuses_a_damaged_run_naming_the_file_and_the_field(tiny_run, tmp_path, capsys, damage, file, words):
    run = copy_run(tiny_run, tmp_path / "run")
    damage(run)
    out = earlier_output(tmp_path / "runs.csv")
    assert collect.main(["--out", str(out), str(run)]) == 2
    one_line_error(capsys, f"pipeline.collect: {run / file}: ", *words)
    assert out.read_bytes() == OLD and not collect.provenance_path(out).exists()


def test_collect_refuses_a_file_a_folder_named_twice_and_a_repeated_run_id(tiny_run, tmp_path, capsys):
    out = earlier_output(tmp_path / "runs.csv")
    notes = earlier_output(tmp_path / "notes.txt")
    assert collect.main(["--out", str(out), str(tiny_run), str(notes)]) == 2
    one_line_error(capsys, f"pipeline.collect: {notes}: ", "not a run folder")
    assert collect.main(["--out", str(out), str(tiny_run), str(tiny_run)]) == 2
    one_line_error(capsys, f"pipeline.collect: {tiny_run}: ", "given twice")
    again = copy_run(tiny_run, tmp_path / "again")
    assert collect.main(["--out", str(out), str(tiny_run), str(again)]) == 2
    one_line_error(capsys, f"pipeline.collect: {again / 'summary.json'}: ", "run_id", str(tiny_run))
    assert out.read_bytes() == OLD and not collect.provenance_path(out).exists()


def test_collect_refuses_an_out_that_is_an_input_or_a_folder(tiny_run, tmp_path, capsys):
    run = copy_run(tiny_run, tmp_path / "run")
    before = (run / "summary.json").read_bytes()
    assert collect.main(["--out", str(run / "summary.json"), str(run)]) == 2
    one_line_error(capsys, "pipeline.collect: ", str(run / "summary.json"), "also an input")
    assert (run / "summary.json").read_bytes() == before
    assert collect.main(["--out", str(tmp_path), str(run)]) == 2
    one_line_error(capsys, "pipeline.collect: ", "is a folder")


# ---------------------------------------------------------------------------------------- pipeline.performance


def write_job(folder: Path, name: str, seconds: str = "100.0", **changes) -> tuple[Path, Path]:
    record = {"members": [{"run_id": f"{name}_{m}"} for m in range(2)], "steps": 10, "wall_time_s": 50.0,
              "validation_wall_time_s": 5.0, "model_flops": {"training": 1e12, "validation": 1e11, "total": 1.1e12},
              "model_config": {"width": 24, "depth": 1, "heads": 1}, "recorded_after_restart": False,
              "matmul": {"flops_per_s": 1e11, "size": 1024, "threads": 1, "repeats": 7, "dtype": "float32",
                         "device": "cpu"}}
    record.update(changes)
    job, benchmark = folder / f"{name}.json", folder / f"{name}.tsv"
    job.write_text(json.dumps(record))
    benchmark.write_text(f"s\th:m:s\tmax_rss\n{seconds}\t0:00:00\t100\n")
    return job, benchmark


def run_performance(jobs, benchmarks, out) -> int:
    return performance.main(["grid", "--jobs", *map(str, jobs), "--benchmarks", *map(str, benchmarks), "--out", str(out)])


@pytest.mark.parametrize("seconds", ["0", "-5", "nan", "abc"])
def test_performance_refuses_benchmark_seconds_that_are_not_positive_and_finite(tmp_path, capsys, seconds):
    job, benchmark = write_job(tmp_path, "job", seconds=seconds)
    out = earlier_output(tmp_path / "performance.json")
    assert run_performance([job], [benchmark], out) == 2
    one_line_error(capsys, f"pipeline.performance: {benchmark}: ", "seconds")
    assert out.read_bytes() == OLD


def test_performance_refuses_a_job_given_twice_and_an_out_that_is_an_input(tmp_path, capsys):
    job, benchmark = write_job(tmp_path, "job")
    _, other = write_job(tmp_path, "other")
    out = earlier_output(tmp_path / "performance.json")
    assert run_performance([job, job], [benchmark, other], out) == 2
    one_line_error(capsys, f"pipeline.performance: {job}: ", "given twice")
    assert out.read_bytes() == OLD
    before = job.read_bytes()
    assert run_performance([job], [benchmark], job) == 2
    one_line_error(capsys, "pipeline.performance: ", "also an input")
    assert job.read_bytes() == before


@pytest.mark.parametrize("changes, field", [
    ({"model_flops": "lots"}, "model_flops"),
    ({"model_flops": {"total": "1e12"}}, "model_flops"),
    ({"members": None}, "members"),
    ({"matmul": {"flops_per_s": "fast"}}, "matmul"),
    ({"steps": "ten"}, "steps"),
    ({"wall_time_s": "long"}, "wall_time_s"),
    ({"model_config": {"width": "wide", "depth": 1}}, "model_config"),
], ids=["flops-text", "total-text", "no-members", "rate-text", "steps-text", "seconds-text", "width-text"])
def test_performance_refuses_a_wrongly_typed_job_record_naming_the_file_and_field(tmp_path, capsys, changes, field):
    job, benchmark = write_job(tmp_path, "job", **changes)
    out = earlier_output(tmp_path / "performance.json")
    assert run_performance([job], [benchmark], out) == 2
    one_line_error(capsys, f"pipeline.performance: {job}: {field} must be")
    assert out.read_bytes() == OLD


def test_performance_refuses_a_job_record_that_is_not_an_object(tmp_path, capsys):
    job, benchmark = write_job(tmp_path, "job")
    job.write_text("[1, 2]")
    out = tmp_path / "performance.json"
    assert run_performance([job], [benchmark], out) == 2
    one_line_error(capsys, f"pipeline.performance: {job}: ", "not a job record")
    assert not out.exists()


# ---------------------------------------------------------------------------------------- dit.data generate


@pytest.mark.parametrize("options, message", [
    (["--seed", "-1"], "--seed must be a non-negative integer, got -1"),
    (["--size", "0"], "--size must be a positive number of pixels, got 0"),
    (["--height", "0"], "--height must be a positive number of pixels, got 0"),
    (["--width", "-16"], "--width must be a positive number of pixels, got -16"),
], ids=["negative-seed", "zero-size", "zero-height", "negative-width"])
def test_generate_refuses_a_negative_seed_and_non_positive_sizes(tmp_path, capsys, options, message):
    out = tmp_path / "gen"
    assert data_main(["generate", "--out", str(out), "--clips", "2", "--frames", "2", "--size", "16", *options]) == 2
    one_line_error(capsys, f"error: {message}")
    assert not out.exists()


# ---------------------------------------------------------------------------------------- dit.sample, dit.caption_match


@pytest.mark.parametrize("options, message", [
    (["--guidance-scale", "nan"], "--guidance-scale must be a finite number, got nan"),
    (["--guidance-scale", "inf"], "--guidance-scale must be a finite number, got inf"),
    (["--eta", "nan"], "--eta must be >= 0 and finite, got nan"),
], ids=["guidance-nan", "guidance-inf", "eta-nan"])
def test_sample_refuses_non_finite_guidance_and_eta(tiny_run, tmp_path, capsys, options, message):
    out = tmp_path / "samples"
    assert sample.main(["--run", str(tiny_run), "--out", str(out), "--steps", "2", "--device", "cpu",
                        "--caption", "big red 7 moves left slowly", *options]) == 2
    one_line_error(capsys, f"dit.sample: {message}")
    assert not out.exists()


def test_sample_refuses_an_out_that_is_a_file(tiny_run, tmp_path, capsys):
    out = earlier_output(tmp_path / "notes.txt")
    assert sample.main(["--run", str(tiny_run), "--out", str(out), "--steps", "2", "--device", "cpu"]) == 2
    one_line_error(capsys, "dit.sample: --out: ", f"{out} is a file")
    assert out.read_bytes() == OLD


@pytest.mark.parametrize("options, message", [
    (["--steps", "0"], "--steps must lie in [1, "),
    (["--guidance-scale", "nan"], "--guidance-scale must be a finite number, got nan"),
], ids=["zero-steps", "guidance-nan"])
def test_caption_match_refuses_bad_sampler_settings(tiny_run, tmp_path, capsys, options, message):
    out = earlier_output(tmp_path / "caption_match.json")
    assert caption_match.main(["--run", str(tiny_run), "--out", str(out), "--clips", "2", "--steps", "2", *options]) == 2
    one_line_error(capsys, f"dit.caption_match: {message}")
    assert out.read_bytes() == OLD


# ---------------------------------------------------------------------------------------- a truncated checkpoint


@pytest.fixture
def truncated_run(tiny_run, tmp_path) -> Path:
    run = copy_run(tiny_run, tmp_path / "truncated")
    for checkpoint in (run / "checkpoints").iterdir():
        checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    return run


def test_a_truncated_model_file_is_refused_by_every_command_that_reads_it(truncated_run, tmp_path, capsys):
    model = truncated_run / "checkpoints" / "model.pt"
    with pytest.raises(ModelFileError, match="unreadable model file, truncated or damaged"):
        load_trained_model(truncated_run)
    out = tmp_path / "out.json"
    for command, arguments in [
        (evaluate.main, ["spread", "--seeds", "2"]), (evaluate.main, ["captions"]),
        (caption_match.main, ["--clips", "2", "--steps", "2"]),
    ]:
        assert command([*arguments, "--run", str(truncated_run), "--out", str(out)]) == 2
        one_line_error(capsys, "dit.", f"{model}: unreadable model file")
        assert not out.exists()
    samples = tmp_path / "samples"
    assert sample.main(["--run", str(truncated_run), "--out", str(samples), "--steps", "2", "--device", "cpu"]) == 2
    one_line_error(capsys, "dit.sample: ", f"{model}: unreadable model file")
    assert not samples.exists()


def test_evaluate_refuses_an_out_that_is_a_file_of_the_run(tiny_run, tmp_path, capsys):
    run = copy_run(tiny_run, tmp_path / "run")
    config = run / "config.yaml"
    before = config.read_bytes()
    for command in ("spread", "captions"):
        assert evaluate.main([command, "--run", str(run), "--out", str(config)]) == 2
        one_line_error(capsys, f"dit.evaluate {command}: --out: ", "also an input")
    assert config.read_bytes() == before


# ---------------------------------------------------------------------------------------- dit.noise_sources


@pytest.mark.parametrize("target", ["0", "nan", "-0.1"])
def test_noise_sources_checks_target_before_any_training(tmp_path, capsys, target):
    # a config whose data folder does not exist: any training would fail with another message
    config = write_config(tmp_path / "cell.yaml", tiny_run_config(tmp_path / "no-data"))
    out, work = tmp_path / "sources.json", tmp_path / "work"
    assert noise_sources.main(["--config", str(config), "--seeds", "2", "--target", target, "--out", str(out),
                               "--work", str(work)]) == 2
    one_line_error(capsys, "dit.noise_sources: ", "--target must be positive and finite")
    assert not out.exists() and not work.exists()


def test_noise_sources_refuses_an_out_that_is_its_config(tmp_path, capsys):
    config = write_config(tmp_path / "cell.yaml", tiny_run_config(tmp_path / "no-data"))
    before = config.read_bytes()
    assert noise_sources.main(["--config", str(config), "--seeds", "2", "--out", str(config),
                               "--work", str(tmp_path / "work")]) == 2
    one_line_error(capsys, "dit.noise_sources: ", "also an input")
    assert config.read_bytes() == before and not (tmp_path / "work").exists()


# ---------------------------------------------------------------------------------------- dit.latent


def test_latent_fit_refuses_non_positive_counts_and_an_out_that_is_a_folder(prepared_data, tmp_path, capsys):
    out = tmp_path / "codec.npz"
    for options, message in [(["--max-clips", "0"], "--max-clips must be positive, got 0"),
                             (["--patch", "0", "4", "4"], "--patch must be positive, got 0 4 4"),
                             (["--channels", "0"], "--channels must be positive, got 0")]:
        assert latent_main(["fit", "--data", str(prepared_data), "--out", str(out), *options]) == 2
        one_line_error(capsys, f"dit.latent: {message}")
        assert not out.exists()
    assert latent_main(["fit", "--data", str(prepared_data), "--out", str(tmp_path)]) == 2
    one_line_error(capsys, "dit.latent: ", "is a folder")


def test_a_codec_with_non_finite_values_is_neither_written_nor_read(tmp_path):
    codec = LatentCodec((1, 1, 1), 3, np.eye(3)[:, :2], np.zeros(3), 1.0, {})
    broken = LatentCodec((1, 1, 1), 3, np.full((3, 2), np.nan), np.zeros(3), 1.0, {})
    path = tmp_path / "codec.npz"
    with pytest.raises(CodecError, match="non-finite values"):
        broken.save(path)
    assert not path.exists()
    codec.save(path)
    with np.load(path) as arrays:
        saved = dict(arrays)
    saved["mean"] = np.array([0.0, np.inf, 0.0])
    np.savez(path, **saved)
    with pytest.raises(CodecError, match=re.escape(f"{path}: non-finite values") + ".* mean"):
        LatentCodec.load(path)


# ---------------------------------------------------------------------------------------- dit.train


def test_train_refuses_an_out_that_is_a_file_in_one_line(prepared_data, tmp_path, capsys):
    config = write_config(tmp_path / "run.yaml", tiny_run_config(prepared_data))
    before = config.read_bytes()
    for out in (config, config / "run"):
        assert train.main(["--config", str(config), "--out", str(out)]) == 2
        one_line_error(capsys, "dit.train: --out ", str(config))
    assert config.read_bytes() == before
