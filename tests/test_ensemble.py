"""Ensemble training: several runs of one shape in one process, each exactly the run it would be alone.

The members here differ in learning rate and seed. Checked: every member's losses equal those of
the same run trained alone and of an independent reference loop (``VideoDiT`` with
``torch.optim.AdamW`` and ``clip_grad_norm_``, the textbook step); a diverging member is frozen
while the others go on; SIGKILL and SIGTERM mid-run followed by a rerun end with the metrics of an
uninterrupted ensemble; two processes give the one-process losses; a checkpoint of another layout
is refused, and a spent one removed (by one process only) whatever the new configs; a job killed
before its job.json writes it on the rerun.
"""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from dit.config import config_from_dict
from dit.data.loader import ClipLoader, ShardDataset
from dit.diffusion import NoiseSchedule, epsilon_mse, validation_loss
from dit.ensemble import EnsembleDiT
from dit.model import VideoDiT, VideoDiTConfig
from dit.seeds import stable_seed
from dit.train import main as train_main

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
RELATIVE_TOLERANCE = 1e-5
#: (learning rate, seed) of the three members
MEMBERS = ((3e-3, 7), (1e-2, 8), (1e-3, 7))


def member_config(data: Path, lr: float, seed: int, run_id: str, **changes) -> dict:
    config = {
        "run": {"id": run_id},
        "seed": seed,
        "threads": 1,
        "model": {"size": "tiny-8k", "patch": [2, 4, 4], "attention": "sdpa", "text_width": 16},
        "data": {"root": str(data)},
        "optimizer": {"lr": lr, "warmup_steps": 4, "grad_clip": 1.0, "weight_decay": 0.01},
        "batch": {"global_clips": 4},
        "schedule": {"milestones_tokens": [6400, 12800, 25600]},  # 256 tokens a step: 25, 50, 100 steps
        "validation": {"timesteps": 4, "batch_clips": 4},
        "checkpoint": {"every_steps": 10},
        "progress": {"interval_seconds": 0.2},
    }
    for key, value in changes.items():
        section, _, name = key.partition("__")
        config[section] = {**config.get(section, {}), name: value} if name else value
    return config


def write_ensemble(path: Path, members: list[tuple[dict, Path]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"members": [{"out": str(out), "config": config} for config, out in members]}))
    return path


def ensemble_members(data: Path, folder: Path, members=MEMBERS, **changes) -> list[tuple[dict, Path]]:
    return [(member_config(data, lr, seed, f"m{i}", **changes), folder / f"m{i}") for i, (lr, seed) in enumerate(members)]


def train(*arguments: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dit.train", *arguments], capture_output=True, text=True,
                          timeout=timeout, env=ENV, cwd=ROOT)


def losses(run_dir: Path) -> list[tuple[float, float]]:
    with open(run_dir / "metrics.csv") as handle:
        return [(float(row["train_loss"]), float(row["validation_loss"])) for row in csv.DictReader(handle)]


def assert_close(actual: list[tuple[float, float]], expected: list[tuple[float, float]], what: str) -> None:
    assert len(actual) == len(expected) > 0, what
    for (train_a, valid_a), (train_e, valid_e) in zip(actual, expected, strict=True):
        assert math.isclose(train_a, train_e, rel_tol=RELATIVE_TOLERANCE), (what, train_a, train_e)
        assert math.isclose(valid_a, valid_e, rel_tol=RELATIVE_TOLERANCE), (what, valid_a, valid_e)


@pytest.fixture(scope="module")
def uninterrupted(prepared_data, tmp_path_factory) -> list[Path]:
    """The three members trained as one ensemble, without interruption."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    members = ensemble_members(prepared_data, folder)
    result = train("--ensemble", str(write_ensemble(folder / "ensemble.yaml", members)), "--out", str(folder / "job"))
    assert result.returncode == 0, result.stderr[-3000:]
    return [out for _, out in members]


def reference_losses(config: dict) -> list[tuple[float, float]]:
    """The run trained by a textbook loop: ``VideoDiT``, ``torch.optim.AdamW``, ``clip_grad_norm_``, with the
    engine's seeded draws (initialisation, data order, per-step timesteps, noise, caption dropout), validated
    with the power-function EMA of its weights (``(1 - 1/t) ** (gamma + 1)``, written out here)."""
    settings = config_from_dict(config)
    torch.set_num_threads(1)
    train_data = ShardDataset(settings.data.root, "train")
    validation_data = ShardDataset(settings.data.root, "validation")
    model_config = VideoDiTConfig.from_size(
        "tiny-8k", in_channels=3, clip_frames=8, clip_height=16, clip_width=16, patch=(2, 4, 4),
        vocab_size=train_data.tokenizer.vocab_size, caption_length=train_data.tokenizer.max_length,
        text_width=16, attention="sdpa")
    torch.manual_seed(stable_seed(settings.seed, "model-init"))
    model = VideoDiT(model_config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.optimizer.lr, weight_decay=0.01)
    loader = ClipLoader(train_data, global_batch_clips=4, seed=stable_seed(settings.seed, "data-order"))
    schedule, null = NoiseSchedule(), torch.as_tensor(train_data.tokenizer.encode(""))
    ema = VideoDiT(model_config)
    rows, interval = [], []
    for step in range(100):
        batch = loader.next_batch()
        generator = torch.Generator().manual_seed(stable_seed(settings.seed, "step", step))
        timesteps = torch.randint(0, 1000, (4,), generator=generator)
        noise = torch.randn((4, 3, 8, 16, 16), generator=generator)
        dropout = torch.rand((4,), generator=generator) < 0.1
        captions = torch.where(dropout[:, None], null[None], batch["caption_ids"].long())
        video = batch["video"].permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0
        for group in optimizer.param_groups:
            group["lr"] = settings.optimizer.lr * min(1.0, (step + 1) / 4)
        loss = epsilon_mse(model, schedule, video, timesteps, noise, caption_ids=captions).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        decay = (1 - 1 / (step + 1)) ** (settings.ema.gamma + 1)
        with torch.no_grad():
            for average, weight in zip(ema.parameters(), model.parameters(), strict=True):
                average.copy_(decay * average + (1 - decay) * weight)
        interval.append(loss.item())
        if step + 1 in (25, 50, 100):
            result = validation_loss(ema, schedule, validation_data.iter_batches(4), num_timesteps=4)
            rows.append((sum(interval) / len(interval), result.mean))
            interval = []
    return rows


@pytest.mark.slow
def test_ensemble_members_equal_the_same_runs_trained_alone(prepared_data, uninterrupted, tmp_path):
    for (lr, seed), member in zip(MEMBERS, uninterrupted, strict=True):
        config = member_config(prepared_data, lr, seed, member.name)
        config_path = tmp_path / f"{member.name}.yaml"
        config_path.write_text(yaml.safe_dump(config))
        result = train("--config", str(config_path), "--out", str(tmp_path / member.name))
        assert result.returncode == 0, result.stderr[-3000:]
        alone = losses(tmp_path / member.name)
        assert losses(member) == alone, f"{member.name} in the ensemble vs alone: not the same bits"
        assert_close(alone, reference_losses(config), f"{member.name} alone vs the reference loop")
        summary = json.loads((member / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["steps"] == 100 and summary["ensemble"]["members"] == 3
        assert summary["learning_rate"] == lr and summary["seed"] == seed
    first, _, third = (losses(member) for member in uninterrupted)
    assert first != third  # same seed, other learning rate: other numbers


@pytest.mark.slow
def test_ensemble_member_that_diverges_is_frozen_and_the_others_go_on(prepared_data, uninterrupted, tmp_path):
    members = ensemble_members(prepared_data, tmp_path, members=(*MEMBERS, (1e3, 9)), divergence__max_loss=2.0,
                               optimizer__grad_clip=None)
    reference = ensemble_members(prepared_data, tmp_path / "without", divergence__max_loss=2.0, optimizer__grad_clip=None)
    for job, chosen in (("job", members), ("without", reference)):
        result = train("--ensemble", str(write_ensemble(tmp_path / f"{job}.yaml", chosen)), "--out", str(tmp_path / job / "job"))
        assert result.returncode == 0, result.stderr[-3000:]
    diverged = json.loads((members[3][1] / "summary.json").read_text())
    assert diverged["status"] == "diverged" and "divergence.max_loss=2.0" in diverged["status_reason"], diverged
    assert diverged["steps"] < 100 and (members[3][1] / "checkpoints" / "model.pt").is_file()
    for (_, out), (_, alone) in zip(members[:3], reference, strict=True):
        assert json.loads((out / "summary.json").read_text())["status"] == "completed"
        # the diverged member changed nothing of the others, not even a last bit
        assert losses(out) == losses(alone), f"{out.name} beside a diverging member vs without it"


def _wait_for(path: Path, process: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.02)


@pytest.mark.slow
@pytest.mark.parametrize("signal_number", [signal.SIGKILL, signal.SIGTERM])
def test_ensemble_killed_or_preempted_resumes_with_identical_metrics(prepared_data, uninterrupted, tmp_path,
                                                                    signal_number):
    members = ensemble_members(prepared_data, tmp_path)
    arguments = ["--ensemble", str(write_ensemble(tmp_path / "ensemble.yaml", members)), "--out", str(tmp_path / "job")]
    process = subprocess.Popen([sys.executable, "-m", "dit.train", *arguments], env=ENV, cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(tmp_path / "job" / "checkpoints" / "latest.pt", process)
    process.send_signal(signal_number)
    _, stderr = process.communicate(timeout=120)
    if signal_number == signal.SIGTERM:
        assert process.returncode == 75, stderr[-3000:]
        assert {json.loads((out / "summary.json").read_text())["status"] for _, out in members} == {"preempted"}
    else:
        assert process.returncode == -signal.SIGKILL
    result = train(*arguments)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resumed from" in result.stderr
    for (_, out), reference in zip(members, uninterrupted, strict=True):
        assert losses(out) == losses(reference), out.name


def test_ensemble_checkpoint_of_another_layout_is_refused(prepared_data, tiny_run, tmp_path, capsys):
    members = ensemble_members(prepared_data, tmp_path)
    job = tmp_path / "job"
    (job / "checkpoints").mkdir(parents=True)
    state = torch.load(tiny_run / "checkpoints" / "latest.pt", map_location="cpu", weights_only=True)
    state["layout"][0][0] = str(tmp_path / "unfinished")  # a job of one other run, still training
    torch.save(state, job / "checkpoints" / "latest.pt")
    foreign = (job / "checkpoints" / "latest.pt").read_bytes()
    code = train_main(["--ensemble", str(write_ensemble(tmp_path / "e.yaml", members)), "--out", str(job)])
    assert code == 2
    assert "belongs to another ensemble layout" in capsys.readouterr().err
    assert (job / "checkpoints" / "latest.pt").read_bytes() == foreign
    mismatched = ensemble_members(prepared_data, tmp_path, members=MEMBERS[:2])
    mismatched[1][0]["batch"]["global_clips"] = 8
    assert train_main(["--ensemble", str(write_ensemble(tmp_path / "m.yaml", mismatched)), "--out", str(job)]) == 2
    assert "members[1].config.batch.global_clips: 8 differs from members[0]'s 4" in capsys.readouterr().err


def test_ensemble_job_whose_checkpoint_is_spent_trains_its_new_runs(prepared_data, uninterrupted, tmp_path, capsys):
    """A pipeline's proposal can give a job folder other runs after its ensemble finished (the held-out runs after a
    refit): the checkpoint of finished runs is spent, so it is removed, the new run trains and the finished one is
    not trained again."""
    job = tmp_path / "job"
    (job / "checkpoints").mkdir(parents=True)
    spent = uninterrupted[0].parent / "job" / "checkpoints" / "latest.pt"  # its runs m0, m1, m2 all completed
    (job / "checkpoints" / "latest.pt").write_bytes(spent.read_bytes())
    finished = (uninterrupted[0] / "metrics.csv").read_text()
    new = member_config(prepared_data, 2e-3, 9, "m3")
    path = write_ensemble(tmp_path / "e.yaml", [(member_config(prepared_data, *MEMBERS[0], "m0"), uninterrupted[0]),
                                                (new, tmp_path / "m3")])
    assert train_main(["--ensemble", str(path), "--out", str(job), "--quiet"]) == 0
    assert "have all finished; removed, starting afresh" in capsys.readouterr().err
    assert json.loads((tmp_path / "m3" / "summary.json").read_text())["status"] == "completed"
    assert (uninterrupted[0] / "metrics.csv").read_text() == finished
    layout = torch.load(job / "checkpoints" / "latest.pt", map_location="cpu", weights_only=True)["layout"]
    assert [Path(out).name for out, _ in layout] == ["m3"]


def _spent_job(prepared_data, tiny_run, tmp_path) -> tuple[list, list, Path]:
    """A job folder holding a spent checkpoint (the tiny run's, which completed) and configured with one new run."""
    from dit.config import resumable_config_hash
    from dit.engine import Member

    job = tmp_path / "job"
    (job / "checkpoints").mkdir(parents=True)
    (job / "checkpoints" / "latest.pt").write_bytes((tiny_run / "checkpoints" / "latest.pt").read_bytes())
    config = config_from_dict(member_config(prepared_data, 2e-3, 9, "new"))
    return [Member(config, tmp_path / "new", resumable_config_hash(config))], [None], job


@pytest.mark.parametrize("rank, removes", [("0", True), ("1", False)])
def test_only_the_main_process_removes_a_spent_checkpoint(prepared_data, tiny_run, tmp_path, monkeypatch, capsys,
                                                          rank, removes):
    """Every process of a torchrun job plans before the process group exists: each starts afresh, and only rank 0
    removes the spent checkpoint (two removers: the slower one failed on the file the other had removed)."""
    from dit.train import plan_members

    configured, finished, job = _spent_job(prepared_data, tiny_run, tmp_path)
    monkeypatch.setenv("RANK", rank)
    assert plan_members(configured, finished, job) == configured
    assert (job / "checkpoints" / "latest.pt").exists() is not removes
    assert ("have all finished; removed" in capsys.readouterr().err) is removes
    assert plan_members(configured, finished, job, is_main=True) == configured  # is_main overrides RANK
    assert not (job / "checkpoints" / "latest.pt").exists()
    assert plan_members(configured, finished, job, is_main=False) == configured  # once removed: a fresh job


def test_a_spent_checkpoint_another_process_removes_while_it_is_read_is_no_error(prepared_data, tiny_run, tmp_path,
                                                                                 monkeypatch):
    import dit.train

    configured, finished, job = _spent_job(prepared_data, tiny_run, tmp_path)
    real = dit.train.read_checkpoint

    def removed_meanwhile(path):
        path.unlink()  # rank 0 removes it between this process's look and its read
        return real(path)

    monkeypatch.setattr(dit.train, "read_checkpoint", removed_meanwhile)
    assert dit.train.plan_members(configured, finished, job, is_main=False) == configured


def test_ensemble_whose_finished_runs_are_configured_anew_trains_them_under_the_new_config(prepared_data, tmp_path,
                                                                                          capsys):
    """A finished ensemble rerun with a changed shared setting (Snakemake after a config edit): its checkpoint is
    spent, removed, and every run trains under the new config, to the numbers of a fresh job folder."""
    short = {"schedule__milestones_tokens": [512, 1024]}  # 4 steps
    before = ensemble_members(prepared_data, tmp_path, members=MEMBERS[:2], **short)
    job = tmp_path / "job"
    assert train_main(["--ensemble", str(write_ensemble(tmp_path / "a.yaml", before)), "--out", str(job), "--quiet"]) == 0
    after = ensemble_members(prepared_data, tmp_path, members=MEMBERS[:2], optimizer__warmup_steps=2, **short)
    fresh = ensemble_members(prepared_data, tmp_path / "fresh", members=MEMBERS[:2], optimizer__warmup_steps=2, **short)
    assert train_main(["--ensemble", str(write_ensemble(tmp_path / "f.yaml", fresh)), "--out", str(tmp_path / "fresh" / "job"),
                       "--quiet"]) == 0
    old_losses = [losses(out) for _, out in before]
    capsys.readouterr()
    assert train_main(["--ensemble", str(write_ensemble(tmp_path / "b.yaml", after)), "--out", str(job), "--quiet"]) == 0
    stderr = capsys.readouterr().err
    assert "its runs ['m0', 'm1'] have all finished; removed, starting afresh" in stderr
    from dit.config import resumable_config_hash

    for (config, out), (_, alone), old in zip(after, fresh, old_losses, strict=True):
        summary = json.loads((out / "summary.json").read_text())
        assert summary["status"] == "completed"
        assert summary["provenance"]["resumable_config_hash"] == resumable_config_hash(config_from_dict(config))
        assert losses(out) == losses(alone) != old, out.name
    assert json.loads((job / "job.json").read_text())["steps"] == 4


def test_ensemble_killed_before_its_record_writes_it_on_the_rerun(prepared_data, tmp_path, monkeypatch, capsys):
    """Killed after every member's summary (one diverged, one completed) and before job.json: the rerun's record has
    the uninterrupted job's members, steps and model FLOPs, and this job's own seconds."""
    import dit.engine

    class Killed(BaseException):
        pass

    changes = {"schedule__milestones_tokens": [512, 1024], "divergence": {"max_loss": 1.1}}
    members = MEMBERS[:1] + ((0.5, 8),)  # the second diverges
    reference = ensemble_members(prepared_data, tmp_path / "reference", members=members, **changes)
    assert train_main(["--ensemble", str(write_ensemble(tmp_path / "r.yaml", reference)),
                       "--out", str(tmp_path / "reference" / "job"), "--quiet"]) == 0
    uninterrupted = json.loads((tmp_path / "reference" / "job" / "job.json").read_text())
    assert [m["status"] for m in uninterrupted["members"]] == ["completed", "diverged"]
    killed = ensemble_members(prepared_data, tmp_path, members=members, **changes)
    arguments = ["--ensemble", str(write_ensemble(tmp_path / "k.yaml", killed)), "--out", str(tmp_path / "job"), "--quiet"]

    def kill(threads):
        raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(dit.engine, "measure_matmul", kill)
        with pytest.raises(Killed):
            train_main(arguments)
    assert not (tmp_path / "job" / "job.json").exists()
    assert train_main(arguments) == 0
    record = json.loads((tmp_path / "job" / "job.json").read_text())
    assert [{**m, "run_dir": Path(m["run_dir"]).name} for m in record["members"]] == \
        [{**m, "run_dir": Path(m["run_dir"]).name} for m in uninterrupted["members"]]
    for key in ("steps", "model_flops", "model_config"):
        assert record[key] == uninterrupted[key], key
    assert record["wall_time_s"] == json.loads((tmp_path / "m0" / "summary.json").read_text())["wall_time_s"] > 0
    assert record["matmul"]["threads"] == 1 and "note" not in record


def test_ensemble_optimizer_moves_each_member_as_fused_adamw_does_to_the_bit():
    """``MemberAdamW`` against ``torch.optim.AdamW(fused=True)`` with one param group per member row (what it replaced):
    two members sharing a learning rate, one frozen for a while, one skipping a step, gradients clipped by each
    member's own norm; the parameters are equal to the bit after every step, and each state dict loads into the
    other and steps on to the same bits."""
    from torch import nn

    from dit.member_training import MemberAdamW, MemberParameters

    generator = torch.Generator().manual_seed(3)
    members, rates = 4, [1e-2, 1e-2, 3e-3, 5e-2]

    class Stacked(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(members, 12, 40, generator=generator))
            self.bias = nn.Parameter(torch.randn(members, 1, 40, generator=generator))

    parameters = MemberParameters(Stacked(), members)
    settings = {"betas": (0.9, 0.99), "eps": 1e-8, "weight_decay": 0.01}
    optimizer = MemberAdamW(parameters, **settings)
    rows = [nn.Parameter(parameters.values[m].clone()) for m in range(members)]
    reference = torch.optim.AdamW([{"params": [row]} for row in rows], lr=0.0, fused=True, **settings)

    def both_step(step: int) -> None:
        gradient = torch.randn(parameters.grads.shape, generator=generator) * (20.0 if step % 3 == 0 else 0.1)
        active = [True, True, not 3 <= step < 8, step != 5]
        parameters.grads.copy_(gradient)
        norms = torch.linalg.vector_norm(gradient, dim=1)
        optimizer.step(rates, active, max_grad_norm=1.0)
        for m, (group, row) in enumerate(zip(reference.param_groups, rows, strict=True)):
            group["lr"] = rates[m]
            row.grad = gradient[m] * (1.0 / (norms[m] + 1e-6)).clamp(max=1.0) if active[m] else None
        reference.step()
        for m in range(members):
            assert torch.equal(parameters.values[m], rows[m].detach()), f"step {step}, member {m}"

    for step in range(12):
        both_step(step)
    ours, theirs = optimizer.state_dict(), reference.state_dict()
    assert [group["lr"] for group in ours["param_groups"]] == rates
    assert sorted(ours["state"]) == sorted(theirs["state"]) == list(range(members))
    assert {key: value for key, value in ours["param_groups"][0].items()} == theirs["param_groups"][0]
    optimizer.load_state_dict(theirs)
    reference.load_state_dict(ours)
    for step in range(12, 16):
        both_step(step)
    with pytest.raises(ValueError, match="3 members does not fit 4"):
        optimizer.load_state_dict({"state": {}, "param_groups": ours["param_groups"][:3]})


def test_activations_give_an_element_the_same_bits_in_a_tensor_of_any_size():
    """An element's SiLU (``size_independent``) and GELU (``nn.GELU`` as it is: its scalar ``erf`` rounds as its
    vector form does, but in a tensor of one element, which the model never has) are the bits it has in a longer
    tensor, at every length up to 130; the plain ``F.silu`` is not, as the CPU kernels compute a tensor's last
    elements with the scalar formula."""
    from torch import nn

    from dit.model import SiLU

    values = torch.randn(2, 65, generator=torch.Generator().manual_seed(0)) * 3
    for activation, shortest in ((SiLU(), 1), (nn.GELU(), 2)):
        whole = activation(values).reshape(-1)
        for count in range(shortest, values.numel() + 1):
            assert torch.equal(activation(values.reshape(-1)[:count]), whole[:count]), (activation, count)
    assert torch.equal(SiLU()(values.t()), SiLU()(values).t())  # a strided input too (GELU's are contiguous)
    flat = values.reshape(-1)
    plain = torch.nn.functional.silu(flat)
    assert any(not torch.equal(torch.nn.functional.silu(flat[:count]), plain[:count]) for count in range(1, flat.numel() + 1))


def test_ensemble_member_moves_to_the_bit_as_the_same_run_alone():
    """Training steps of ``EnsembleDiT`` with ``MemberAdamW``: each member's parameters equal, to the bit, those
    of the same member trained as an ensemble of one, at a width and batch (24 channels, 1 clip) where a member's
    conditioning vectors do not fill the CPU kernels' vectors, so a run alone and its ensemble's members would
    otherwise leave different elements to the scalar formula."""
    from dit.member_training import MemberAdamW, MemberParameters, accumulate_gradients

    config = VideoDiTConfig.from_size("tiny-9k", in_channels=16, clip_frames=4, clip_height=4, clip_width=4,
                                      patch=(1, 1, 1), vocab_size=64, caption_length=8, text_width=16,
                                      attention="sdpa")
    schedule, shape = NoiseSchedule(), (1, 16, 4, 4, 4)

    def trained(members: list[int], steps: int = 12) -> torch.Tensor:
        models = []
        for member in members:
            torch.manual_seed(100 + member)
            models.append(VideoDiT(config))
        ensemble = EnsembleDiT.from_members(config, models)
        parameters = MemberParameters(ensemble, len(members))
        optimizer = MemberAdamW(parameters)
        for step in range(steps):
            draws = []
            for member in members:
                generator = torch.Generator().manual_seed(1000 * member + step)
                draws.append((torch.rand(shape, generator=generator) * 2 - 1,
                              torch.randint(0, 1000, (1,), generator=generator),
                              torch.randn(shape, generator=generator),
                              torch.randint(3, 64, (1, 8), generator=generator)))
            video, timesteps, noise, captions = (torch.stack([d[i] for d in draws]) for i in range(4))
            parameters.zero_grad()
            accumulate_gradients(ensemble, schedule, video, timesteps, noise, captions, 1, 1)
            optimizer.step([3e-2 * (1 + member) for member in members], [True] * len(members), 1.0)
        return parameters.values

    together = trained([0, 1, 2])
    for member in (0, 2):
        assert torch.equal(trained([member])[0], together[member]), f"member {member}"


@pytest.mark.slow
def test_ensemble_in_two_processes_gives_the_one_process_losses(prepared_data, uninterrupted, tmp_path):
    members = ensemble_members(prepared_data, tmp_path)
    path = write_ensemble(tmp_path / "ensemble.yaml", members)
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "dit.train",
         "--ensemble", str(path), "--out", str(tmp_path / "job")],
        capture_output=True, text=True, timeout=600, env=ENV, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    for (_, out), reference in zip(members, uninterrupted, strict=True):
        assert json.loads((out / "summary.json").read_text())["processes"] == 2
        assert_close(losses(out), losses(reference), f"{out.name}: 2 processes vs 1")


@pytest.mark.cuda
def test_ensemble_on_cuda_with_xformers_matches_its_members(cuda_xformers):
    """On CUDA the member-axis model runs xformers with the members folded into its batch, and every member's
    prediction equals that of its own VideoDiT (the same backend) up to float32 rounding."""
    config = VideoDiTConfig.from_size("tiny-1m", in_channels=16, clip_frames=4, clip_height=4, clip_width=4,
                                      patch=(1, 1, 1), attention="xformers", text_width=64)
    models = []
    for seed in range(3):
        torch.manual_seed(seed)
        models.append(VideoDiT(config).to(cuda_xformers))
    ensemble = EnsembleDiT.from_members(config, models).to(cuda_xformers)
    generator = torch.Generator(device="cpu").manual_seed(0)
    clips = torch.randn(3, 4, 16, 4, 4, 4, generator=generator).to(cuda_xformers)
    timesteps = torch.randint(0, 1000, (3, 4), generator=generator).to(cuda_xformers)
    captions = torch.randint(2, config.vocab_size, (3, 4, config.caption_length), generator=generator)
    captions[..., 0], captions[..., 16:] = 1, 0
    captions = captions.to(cuda_xformers)
    with torch.no_grad():
        together = ensemble(clips, timesteps, captions)
        for member, model in enumerate(models):
            alone = model(clips[member], timesteps[member], caption_ids=captions[member])
            torch.testing.assert_close(together[member], alone, rtol=1e-4, atol=1e-5)
