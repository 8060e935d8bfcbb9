"""dit.launch: the command it replaces itself with (python -m dit.train, torchrun, srun ... torchrun
--nnodes), the rendezvous host taken from SLURM's node list, and the refusals (bad JSON or config, fewer
than one process or node, several nodes outside a SLURM allocation). ``os.execvp`` is replaced by a
recorder, so the command is checked without starting it."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import yaml

from dit import launch
from training_runs import tiny_run_config

TRAIN = ["-m", "dit.train", "--config"]


class Executed(Exception):
    """Raised by the recorder that stands in for os.execvp."""


@pytest.fixture
def executed(monkeypatch):
    """The command ``dit.launch.main`` would replace itself with: ``executed[0]`` after the call."""
    commands: list[list[str]] = []

    def record(program, arguments):
        assert program == arguments[0]
        commands.append(list(arguments))
        raise Executed

    monkeypatch.setattr(os, "execvp", record)
    return commands


def launched(argv: list[str], executed: list[list[str]]) -> list[str]:
    with pytest.raises(Executed):
        launch.main(argv)
    return executed[-1]


@pytest.fixture
def config_json(tmp_path) -> str:
    return json.dumps(tiny_run_config(tmp_path / "data"))


def test_one_process_runs_the_trainer_itself_with_the_written_config(config_json, tmp_path, executed, capsys):
    out = tmp_path / "run"
    command = launched(["--config-json", config_json, "--out", str(out)], executed)
    config_path = out / "train.yaml"
    assert command == [sys.executable, *TRAIN, str(config_path), "--out", str(out)]
    assert yaml.safe_load(config_path.read_text()) == json.loads(config_json)
    assert capsys.readouterr().err.strip() == "dit.launch: " + " ".join(command)


def test_several_processes_on_one_node_run_torchrun_standalone(config_json, tmp_path, executed):
    out = tmp_path / "run"
    command = launched(["--config-json", config_json, "--out", str(out), "--processes", "4"], executed)
    assert command == [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=4", "--standalone",
                       *TRAIN, str(out / "train.yaml"), "--out", str(out)]


def _fake_scontrol(folder: Path, hosts: list[str]) -> None:
    """An ``scontrol`` that answers ``show hostnames`` with ``hosts``, one per line."""
    folder.mkdir()
    script = folder / "scontrol"
    script.write_text('#!/bin/sh\n[ "$1 $2" = "show hostnames" ] || exit 1\nprintf "%s\\n" ' + " ".join(hosts) + "\n")
    script.chmod(0o755)


def test_several_nodes_run_srun_torchrun_with_the_allocations_first_host(config_json, tmp_path, executed, monkeypatch):
    _fake_scontrol(tmp_path / "bin", ["gpu-a07", "gpu-a08", "gpu-b01"])
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "gpu-a[07-08],gpu-b01")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    out = tmp_path / "run"
    command = launched(["--config-json", config_json, "--out", str(out), "--processes", "8", "--nodes", "3"], executed)
    assert command == [
        "srun", "--nodes=3", "--ntasks-per-node=1", "--kill-on-bad-exit=1",
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=8", "--nnodes=3", "--rdzv-backend=c10d",
        "--rdzv-id=4242", "--rdzv-endpoint=gpu-a07:29500", *TRAIN, str(out / "train.yaml"), "--out", str(out),
    ]


@pytest.mark.parametrize(
    "nodelist, first",
    [("node1", "node1"), ("node[01-04]", "node01"), ("gpu[07-12,20],cpu1", "gpu07"), ("a[3,5-6]", "a3"),
     ("rack2-n[10-11]-ib,x1", "rack2-n10-ib"), ("login,node[1-2]", "login")],
)
def test_first_host_of_a_node_list_without_scontrol(nodelist, first, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no scontrol here
    assert launch.first_slurm_host(nodelist) == first


def test_an_scontrol_that_fails_leaves_the_list_to_be_read(tmp_path, monkeypatch):
    (tmp_path / "scontrol").write_text("#!/bin/sh\necho 'no configuration' >&2\nexit 1\n")
    (tmp_path / "scontrol").chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert launch.first_slurm_host("node[01-04]") == "node01"


@pytest.mark.parametrize(
    "options, message",
    [
        (["--nodes", "2"], "dit.launch: --nodes > 1 needs a SLURM allocation (SLURM_JOB_NODELIST is not set)"),
        (["--processes", "0"], "dit.launch: processes and nodes must be at least 1, got processes=0, nodes=1"),
        (["--nodes", "0"], "dit.launch: processes and nodes must be at least 1, got processes=1, nodes=0"),
    ],
)
def test_impossible_process_counts_are_refused(options, message, config_json, tmp_path, executed, monkeypatch, capsys):
    monkeypatch.delenv("SLURM_JOB_NODELIST", raising=False)
    assert launch.main(["--config-json", config_json, "--out", str(tmp_path / "run"), *options]) == 2
    assert capsys.readouterr().err.strip() == message
    assert executed == []


def test_bad_json_is_refused_before_anything_is_written(tmp_path, executed, capsys):
    out = tmp_path / "run"
    assert launch.main(["--config-json", "{not json", "--out", str(out)]) == 2
    assert "dit.launch: --config-json is not valid JSON" in capsys.readouterr().err
    assert launch.main(["--ensemble-json", "[1,", "--out", str(out)]) == 2
    assert "dit.launch: --ensemble-json is not valid JSON" in capsys.readouterr().err
    assert not out.exists() and executed == []


def test_a_bad_config_is_left_to_dit_train_which_names_the_key(tmp_path, executed, capsys):
    """dit.launch checks only that it got JSON; dit.train, which every process runs first, checks the keys."""
    from dit.train import main as train_main

    out = tmp_path / "run"
    bad = json.dumps(tiny_run_config(tmp_path / "data", optimizer={"lr": -1.0}))
    with pytest.raises(Executed):  # os.execvp, recorded by `executed`
        launch.main(["--config-json", bad, "--out", str(out)])
    assert executed and executed[0][-4:] == ["--config", str(out / "train.yaml"), "--out", str(out)]
    assert train_main(["--config", str(out / "train.yaml"), "--out", str(out)]) == 2
    assert "dit.train: configuration error: optimizer.lr" in capsys.readouterr().err
