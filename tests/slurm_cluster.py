"""A real single-node SLURM cluster on this machine, for integration tests and for trying the pipeline.

Uses Debian's ``slurm-wlm`` and ``munge`` packages when they are installed and installs nothing itself.
Needs root. ``SlurmCluster.start(directory)`` writes every file the daemons use (munge key and socket,
state, spool, logs) under ``directory``, installs the generated config as ``/etc/slurm/slurm.conf``
(SLURM clients and the Snakemake executor's inner ``srun`` read that path; a file already there is
backed up and put back by ``stop``), starts ``munged``, ``slurmctld`` and ``slurmd`` in their own
sessions and records their PIDs. ``stop()`` cancels the cluster's jobs, then signals exactly the
recorded PIDs (never processes found by name), each step bounded by a timeout.

The node ``localnode`` (partition ``debug``, the default) has this machine's CPUs, 95% of its memory
and two placeholder GPUs (gres naming /dev/null and /dev/zero), so jobs asking for ``--gpus`` are
scheduled and run on the CPU. There is no accounting daemon: ``sacct`` does not work, job states come
from ``squeue``, which keeps finished jobs for MinJobAge = 600 s.

Only one such cluster can run on a machine at a time (the config path is fixed); a second ``start``
waits for the first to stop, up to ``busy_wait_s``, and takes over a config left by one whose daemons
are all gone.

As a script (``start`` also writes DIR/snakemake-profile, workflow/profiles/slurm adapted to it)::

    python tests/slurm_cluster.py start  --dir DIR   # prints the cluster's state as JSON
    python tests/slurm_cluster.py status --dir DIR
    python tests/slurm_cluster.py stop   --dir DIR
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

SYSTEM_CONFIG = Path("/etc/slurm/slurm.conf")
REPOSITORY_PROFILE = Path(__file__).resolve().parent.parent / "workflow" / "profiles" / "slurm"
LOCK_FILE = Path("/run/lock/dit-slurm-cluster.lock") if Path("/run/lock").is_dir() else Path("/tmp/dit-slurm-cluster.lock")
MARKER = "# dit-slurm-cluster state file: "
STATE_NAME = "cluster.json"
PARTITION = "debug"
NODE_NAME = "localnode"
CLUSTER_NAME = "ditlocal"
PLACEHOLDER_GPU_DEVICES = ("/dev/null", "/dev/zero")
GPUS = len(PLACEHOLDER_GPU_DEVICES)
MIN_JOB_AGE_S = 600
KILL_WAIT_S = 30
REQUIRED_EXECUTABLES = (
    "munged", "slurmctld", "slurmd", "setpriv",
    "sbatch", "srun", "squeue", "sinfo", "scancel", "scontrol",
)
ACTIVE_JOB_STATES = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING", "STOPPED", "SIGNALING", "STAGE_OUT"}
FINISHED_JOB_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL", "DEADLINE", "REVOKED", "SPECIAL_EXIT"}


class SlurmClusterError(RuntimeError):
    """The local cluster could not be started, queried or stopped; the message says why and names the log."""


class _StartupFailed(SlurmClusterError):
    """A start-up check found a state that waiting will not fix."""


class SlurmClusterBusy(SlurmClusterError):
    """Another local test cluster owns /etc/slurm/slurm.conf and kept it past the wait."""


def missing_requirements() -> str | None:
    """Why a local cluster cannot start here (not root, packages absent), or None when it can."""
    if os.name != "posix" or not Path("/proc/self/stat").exists():
        return "a local SLURM cluster needs Linux"
    if os.geteuid() != 0:
        return "a local SLURM cluster needs root (the daemons run as root and munged as the munge user)"
    missing = [name for name in REQUIRED_EXECUTABLES if _which(name) is None]
    if missing:
        return f"SLURM/munge executables not found: {', '.join(missing)} (install Debian packages slurm-wlm and munge)"
    try:
        import pwd

        pwd.getpwnam("munge")
    except KeyError:
        return "the 'munge' user does not exist (install the Debian package munge)"
    return None


def _which(name: str) -> str | None:
    return shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


def _process_start_time(pid: int) -> int | None:
    """The kernel's start time of a live (non-zombie) process in clock ticks, or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without SLURM_* variables (an outer SLURM job would leak its ids)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("SLURM_", "SBATCH_", "SRUN_", "SQUEUE_"))}
    env["SLURM_CONF"] = str(SYSTEM_CONFIG)
    if "/usr/sbin" not in env.get("PATH", "").split(":"):
        env["PATH"] = env.get("PATH", "") + ":/usr/sbin"
    env.update(extra or {})
    return env


@dataclass
class Daemon:
    """One started daemon: its PID, the kernel start time that identifies it, and its log file."""

    name: str
    pid: int
    start_time: int
    log: str

    def alive(self) -> bool:
        return _process_start_time(self.pid) == self.start_time


@dataclass
class SlurmCluster:
    """A running single-node cluster: one node ``localnode`` in partition ``debug`` (the default)."""

    directory: str
    slurmctld_port: int
    slurmd_port: int
    cpus: int
    real_memory_mb: int
    topology: str
    config_backup: str | None
    daemons: list[Daemon] = field(default_factory=list)
    partition: str = PARTITION
    node: str = NODE_NAME
    start_seconds: float = 0.0

    # ---------------------------------------------------------------- starting and stopping
    @classmethod
    def start(cls, directory: str | os.PathLike, *, timeout_s: float = 60.0, busy_wait_s: float = 0.0) -> "SlurmCluster":
        """Start a cluster whose files live in ``directory`` (created; must be empty or absent).

        Raises SlurmClusterError with the reason and the relevant log when a daemon fails or the node
        does not become idle within ``timeout_s``; whatever was started is stopped again first.
        """
        reason = missing_requirements()
        if reason:
            raise SlurmClusterError(reason)
        started = time.monotonic()
        directory = Path(directory).resolve()
        if directory.exists() and any(directory.iterdir()):
            raise SlurmClusterError(f"cluster directory {directory} is not empty")
        directory.mkdir(parents=True, exist_ok=True)
        # munged runs as the munge user and must reach its socket inside this folder.
        _make_traversable(directory)

        cluster = _claim_system_config(directory, busy_wait_s)
        try:
            cluster._write_files()
            cluster._start_daemons(timeout_s)
        except BaseException as error:
            try:
                cluster.stop()
            except SlurmClusterError as stop_error:
                raise SlurmClusterError(f"{error}; stopping again also failed: {stop_error}") from error
            raise
        cluster.start_seconds = time.monotonic() - started
        cluster._save()
        return cluster

    def stop(self, *, timeout_s: float = 30.0) -> None:
        """Cancel every job, stop exactly the recorded daemons and put back /etc/slurm/slurm.conf."""
        problems = []
        if any(d.name == "slurmctld" and d.alive() for d in self.daemons):
            try:
                self._cancel_all_jobs(timeout_s)
            except SlurmClusterError as error:
                problems.append(str(error))
        for name in ("slurmd", "slurmctld", "munged"):
            for daemon in [d for d in self.daemons if d.name == name]:
                if not _terminate(daemon, timeout_s):
                    problems.append(f"{daemon.name} (PID {daemon.pid}) did not exit after SIGKILL")
        _release_system_config(self)
        self._save(stopped=True)
        if problems:
            raise SlurmClusterError("; ".join(problems))

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "SlurmCluster":
        """The cluster recorded in ``directory`` by ``start`` (running or not)."""
        path = Path(directory).resolve() / STATE_NAME
        try:
            state = json.loads(path.read_text())
        except FileNotFoundError:
            raise SlurmClusterError(f"no cluster state file {path}: was a cluster started with --dir {directory}?") from None
        state.pop("stopped", None)
        state["daemons"] = [Daemon(**d) for d in state["daemons"]]
        return cls(**state)

    def running(self) -> bool:
        """True while all three recorded daemons are alive."""
        return bool(self.daemons) and all(d.alive() for d in self.daemons)

    # ---------------------------------------------------------------- using the cluster
    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """Environment for SLURM clients and Snakemake: this process's, minus inherited SLURM_* variables."""
        return _clean_env(extra)

    def snakemake_args(self, *, jobs: int = 2) -> list[str]:
        """Snakemake 9 options that run a workflow on this cluster through snakemake-executor-plugin-slurm.

        For a run that uses a profile, pass ``--profile`` with a folder from ``write_profile`` instead:
        a profile written for a real cluster asks for more CPUs than this node has (jobs would pend).
        """
        return [
            "--executor", "slurm",
            "--jobs", str(jobs),
            # No slurmdbd here: sacct cannot answer, so job states come from squeue (MinJobAge keeps
            # finished jobs visible for MIN_JOB_AGE_S seconds).
            "--slurm-status-command", "squeue",
            # No accounts here. (Plugin 2.8.0 still tries to guess one with sacct and warns
            # "sacct: invalid option"; the guess fails and jobs are submitted without -A.)
            "--slurm-no-account",
            # The first status check after a submission comes after 1 s instead of 40 s, and the first
            # round of checks after 1 s instead of 10 s. (The executor then adds 10 s per round in
            # which no job finished; that step is fixed in the plugin.)
            "--slurm-init-seconds-before-status-checks", "1",
            "--seconds-between-status-checks", "1",
            "--latency-wait", "5",
            "--default-resources", f"slurm_partition={self.partition}", "runtime=10", "mem_mb=500", "cpus_per_task=1",
        ]

    def write_profile(self, source: str | os.PathLike, destination: str | os.PathLike) -> Path:
        """Copy the Snakemake profile folder ``source`` to ``destination``, adapted to this cluster; returns it.

        Resource requests are capped at what the one node has (CPUs, memory per CPU, placeholder GPUs),
        every job goes to this cluster's partition without an account, the cluster options of
        ``snakemake_args`` are added, and everything else (retries, slurm_extra, keep-going, ...) is kept.
        Use it as ``snakemake --profile DESTINATION``.
        """
        import yaml

        source, destination = Path(source), Path(destination)
        config_path = source / "config.yaml"
        try:
            profile = yaml.safe_load(config_path.read_text()) or {}
        except FileNotFoundError:
            raise SlurmClusterError(f"profile {source} has no config.yaml") from None
        if not isinstance(profile, dict):
            raise SlurmClusterError(f"{config_path} is not a mapping of Snakemake options")
        profile["default-resources"] = self._fit_resources(profile.get("default-resources") or {}, f"{config_path}: default-resources")
        profile["set-resources"] = {
            rule: self._fit_resources(resources or {}, f"{config_path}: set-resources: {rule}")
            for rule, resources in (profile.get("set-resources") or {}).items()
        }
        profile["default-resources"]["slurm_partition"] = self.partition
        profile.update(
            {
                "executor": "slurm",
                "jobs": min(int(profile.get("jobs", self.cpus)), self.cpus),
                "latency-wait": 5,
                "slurm-no-account": True,
                "slurm-status-command": "squeue",
                "slurm-init-seconds-before-status-checks": 1,
                "seconds-between-status-checks": 1,
            }
        )
        profile.pop("slurm-efficiency-report", None)  # needs accounting (sacct), which this cluster lacks
        destination.mkdir(parents=True, exist_ok=True)
        header = f"# {source.resolve() / 'config.yaml'} adapted to the local test cluster in {self.directory}\n"
        (destination / "config.yaml").write_text(header + yaml.safe_dump(profile, sort_keys=False))
        return destination

    def _fit_resources(self, resources: dict, where: str) -> dict:
        """Resource requests capped at this node: CPUs, memory per CPU, untyped placeholder GPUs, no account."""
        if not isinstance(resources, dict):
            raise SlurmClusterError(f"{where} is not a mapping of resource names to values")
        fitted = {}
        for key, value in resources.items():
            if key in ("slurm_account", "slurm_partition", "constraint", "qos", "gpu_model", "slurm_cluster", "clusters", "cluster"):
                continue  # this cluster has one partition, no accounts, features, QOS or GPU models
            if key in ("cpus_per_task", "cpus_per_gpu", "tasks", "tasks_per_gpu") and isinstance(value, int):
                value = max(1, min(value, self.cpus))
            elif key == "mem_mb" and isinstance(value, int):
                value = min(value, self.real_memory_mb // self.cpus)
            elif key == "mem_mb_per_cpu" and isinstance(value, int):
                value = min(value, self.real_memory_mb // self.cpus)
            elif key in ("gpu", "gpus") and isinstance(value, int):
                value = min(value, GPUS)
            elif key == "gres" and isinstance(value, str) and value.startswith("gpu"):
                count = value.rsplit(":", 1)[-1] if ":" in value else "1"
                value = f"gpu:{min(int(count), GPUS) if count.isdigit() else 1}"
            elif key == "nodes":
                value = 1
            fitted[key] = value
        return fitted

    def run(self, args: list[str], *, timeout_s: float = 30.0, check: bool = True, cwd: str | os.PathLike | None = None) -> subprocess.CompletedProcess:
        """Run a command (a SLURM client, usually) with ``env()``, text output captured, bounded by ``timeout_s``."""
        try:
            result = subprocess.run(args, env=self.env(), cwd=cwd, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired as error:
            raise SlurmClusterError(f"{' '.join(map(str, args))} did not finish within {timeout_s} s") from error
        if check and result.returncode != 0:
            raise SlurmClusterError(f"{' '.join(map(str, args))} exited with {result.returncode}: {result.stderr.strip()}")
        return result

    def run_bounded(self, args: list[str], *, timeout_s: float, cwd: str | os.PathLike | None = None, kill_after_s: float = 10.0) -> subprocess.CompletedProcess:
        """Run a long command (e.g. snakemake) under ``timeout -k``; stdout and stderr merged into ``.stdout``.

        Exit code 124 (or 137) means the time limit was hit; the whole process group is then killed.
        """
        wrapped = ["timeout", "-k", str(kill_after_s), str(timeout_s), *map(str, args)]
        return subprocess.run(
            wrapped, env=self.env(), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            timeout=timeout_s + kill_after_s + 30,
        )

    def sbatch(self, *args: str) -> str:
        """Submit with ``sbatch --parsable ARGS``; returns the job id."""
        output = self.run(["sbatch", "--parsable", *args]).stdout.strip()
        return output.split(";")[0]

    def job_state(self, job_id: str) -> str | None:
        """The job's state as squeue reports it (e.g. RUNNING, COMPLETED), or None when squeue does not know it."""
        result = self.run(["squeue", "--noheader", "--states=all", "--format=%T", "--jobs", str(job_id)], check=False)
        state = result.stdout.strip()
        return state or None

    def wait_for_job_state(self, job_id: str, states: str | set[str] | tuple[str, ...], *, timeout_s: float = 60.0, poll_s: float = 0.2) -> str:
        """Poll squeue until the job is in one of ``states``; returns the state reached.

        Raises SlurmClusterError, naming the last state seen, when the job finishes in another state or
        the time runs out.
        """
        wanted = {states} if isinstance(states, str) else set(states)
        deadline = time.monotonic() + timeout_s
        state = None
        while time.monotonic() < deadline:
            state = self.job_state(job_id)
            if state in wanted:
                return state
            if state in FINISHED_JOB_STATES:
                raise SlurmClusterError(f"job {job_id} finished as {state}, expected {sorted(wanted)}")
            time.sleep(poll_s)
        raise SlurmClusterError(f"job {job_id} not in {sorted(wanted)} after {timeout_s} s (last state: {state})")

    def jobs(self) -> list[dict[str, str]]:
        """Every job squeue still knows (finished ones stay MIN_JOB_AGE_S seconds): dicts with
        ``job_id``, ``name``, ``state`` and ``comment``. The Snakemake executor comments its jobs
        ``rule_<rule>`` or ``rule_<rule>_wildcards_<values>``."""
        output = self.run(["squeue", "--noheader", "--states=all", "--format=%i|%j|%T|%k"]).stdout
        keys = ("job_id", "name", "state", "comment")
        return [dict(zip(keys, line.split("|", 3))) for line in output.splitlines() if line.strip()]

    def wait_for_rule_job(self, rule: str, states: str | set[str] | tuple[str, ...] = "RUNNING", *, wildcards: str | None = None,
                          timeout_s: float = 120.0) -> str:
        """Wait until a job Snakemake submitted for ``rule`` (with these ``wildcards`` values, joined by ``_``,
        when given) is in one of ``states``; returns its job id (the newest such job, so a resubmitted
        attempt is found once the first has finished)."""
        wanted = {states} if isinstance(states, str) else set(states)
        found: list[str] = []

        def matches(comment: str) -> bool:
            if wildcards is not None:  # the executor writes the wildcard values with / turned into _
                return comment == f"rule_{rule}_wildcards_{wildcards.replace('/', '_')}"
            return comment == f"rule_{rule}" or comment.startswith(f"rule_{rule}_wildcards_")

        def present() -> bool:
            found[:] = [job["job_id"] for job in self.jobs() if job["state"] in wanted and matches(job["comment"])]
            return bool(found)

        _wait_until(present, timeout_s, lambda: f"no job of rule {rule} in {sorted(wanted)} after {timeout_s} s: {self.jobs()}", poll_s=0.2)
        return max(found, key=int)

    def job_info(self, job_id: str) -> dict[str, str]:
        """``scontrol show job`` as a dict (JobState, ExitCode "75:0", Reason, StdOut, ...); empty once purged."""
        result = self.run(["scontrol", "--oneliner", "show", "job", str(job_id)], check=False)
        return dict(item.split("=", 1) for item in result.stdout.split() if "=" in item)

    def send_signal(self, job_id: str, name: str = "TERM", *, include_batch_script: bool = False) -> None:
        """Send a signal with scancel, without cancelling the job.

        Plain ``scancel --signal`` reaches only job steps (processes started with srun, which is how
        the Snakemake executor runs every rule); a process run directly by the batch script needs
        ``include_batch_script=True`` (``--full``: the script and all its children).
        """
        self.run(["scancel", f"--signal={name}", *(["--full"] if include_batch_script else []), str(job_id)])

    def node_state(self) -> str:
        """The node's state as sinfo reports it (idle, mixed, allocated, down, ...)."""
        return self.run(["sinfo", "--noheader", "--nodes", self.node, "--format=%T"]).stdout.strip()

    def status(self) -> dict:
        """Daemon liveness and, when the controller is up, the node's state: for the CLI and for diagnostics."""
        report = {
            "directory": self.directory,
            "daemons": {d.name: {"pid": d.pid, "alive": d.alive(), "log": d.log} for d in self.daemons},
            "running": self.running(),
        }
        if report["running"]:
            try:
                report["node_state"] = self.node_state()
            except SlurmClusterError as error:
                report["node_state_error"] = str(error)
        return report

    # ---------------------------------------------------------------- internals
    @property
    def _root(self) -> Path:
        return Path(self.directory)

    def _save(self, stopped: bool = False) -> None:
        state = asdict(self)
        state["stopped"] = stopped
        path = self._root / STATE_NAME
        temporary = path.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(state, indent=2) + "\n")
        os.replace(temporary, path)

    def _write_files(self) -> None:
        import pwd

        munge = pwd.getpwnam("munge")
        munge_dir = self._root / "munge"
        munge_dir.mkdir(mode=0o755)
        key = munge_dir / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        for path in (munge_dir, key):
            os.chown(path, munge.pw_uid, munge.pw_gid)
        for name in ("state", "spool", "log"):
            (self._root / name).mkdir(mode=0o755)
        (self._root / "slurm.conf").write_text(self._config_text())
        # Placeholder GPUs: slurmd drops a GPU without a device file, so each one names a harmless
        # character device. Jobs that ask for gpus/gres then schedule here and run on the CPU. slurmd reads
        # gres.conf beside the slurm.conf it was started with (-f), so it stays in this folder.
        (self._root / "gres.conf").write_text("".join(f"NodeName={NODE_NAME} Name=gpu File={device}\n" for device in PLACEHOLDER_GPU_DEVICES))
        _install_system_config(self)

    def _config_text(self) -> str:
        root = self._root
        return "\n".join([
            f"{MARKER}{root / STATE_NAME}",
            "# Single-node test cluster written by tests/slurm_cluster.py; removed again when it stops.",
            f"ClusterName={CLUSTER_NAME}",
            f"SlurmctldHost={socket.gethostname().split('.')[0]}(127.0.0.1)",
            f"SlurmctldPort={self.slurmctld_port}",
            f"SlurmdPort={self.slurmd_port}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={root / 'munge' / 'munged.sock'}",
            f"StateSaveLocation={root / 'state'}",
            f"SlurmdSpoolDir={root / 'spool'}",
            f"SlurmctldPidFile={root / 'slurmctld.pid'}",
            f"SlurmdPidFile={root / 'slurmd.pid'}",
            f"SlurmctldLogFile={root / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={root / 'log' / 'slurmd.log'}",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "DefMemPerCPU=1000",
            "SchedulerType=sched/backfill",
            "AccountingStorageType=accounting_storage/none",
            "JobAcctGatherType=jobacct_gather/none",
            "JobCompType=jobcomp/none",
            "MpiDefault=none",
            "MailProg=/bin/true",
            "GresTypes=gpu",
            "SwitchType=switch/none",
            "ReturnToService=2",
            f"MinJobAge={MIN_JOB_AGE_S}",
            f"KillWait={KILL_WAIT_S}",
            "InactiveLimit=0",
            "SlurmdTimeout=300",
            f"NodeName={NODE_NAME} NodeAddr=127.0.0.1 NodeHostname={socket.gethostname().split('.')[0]} "
            f"CPUs={self.cpus} {self.topology} RealMemory={self.real_memory_mb} Gres=gpu:{GPUS} State=UNKNOWN",
            f"PartitionName={PARTITION} Nodes={NODE_NAME} Default=YES MaxTime=INFINITE State=UP",
            "",
        ])

    def _start_daemons(self, timeout_s: float) -> None:
        root = self._root
        munge_dir = root / "munge"
        socket_path = munge_dir / "munged.sock"
        self._spawn("munged", [
            "setpriv", "--reuid=munge", "--regid=munge", "--init-groups",
            _which("munged"), "--foreground", f"--socket={socket_path}", f"--key-file={munge_dir / 'munge.key'}",
            f"--pid-file={munge_dir / 'munged.pid'}", f"--log-file={munge_dir / 'munged.log'}",
            f"--seed-file={munge_dir / 'munged.seed'}",
        ], munge_dir / "munged.log")
        _wait_until(lambda: socket_path.exists(), timeout_s, lambda: self._failure("munged did not create its socket", "munged"), self._daemon_died)
        self._spawn("slurmctld", [_which("slurmctld"), "-D", "-i", "-f", str(root / "slurm.conf")], root / "log" / "slurmctld.log")
        _wait_until(lambda: "is UP" in self.run(["scontrol", "ping"], check=False, timeout_s=10).stdout,
                    timeout_s, lambda: self._failure("slurmctld does not answer 'scontrol ping'", "slurmctld"), self._daemon_died)
        self._spawn("slurmd", [_which("slurmd"), "-D", "-N", NODE_NAME, "-f", str(root / "slurm.conf")], root / "log" / "slurmd.log")
        _wait_until(self._node_ready, timeout_s,
                    lambda: self._failure(f"node {NODE_NAME} is not idle after {timeout_s} s: {self._node_state_or_error()}", "slurmd"),
                    self._daemon_died)

    def _node_ready(self) -> bool:
        state = self.node_state()
        if "drain" in state or "inval" in state:
            # slurmd registered with less than the config promises (CPUs, memory, GPUs): it will not recover.
            raise _StartupFailed(self._failure(f"node {NODE_NAME} was drained at registration: {self._node_state_or_error()}", "slurmd"))
        return state in ("idle", "mixed", "allocated")

    def _spawn(self, name: str, command: list[str], log: Path) -> None:
        output = open(self._root / "log" / f"{name}.out", "ab")
        try:
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                start_new_session=True, env=self.env(), close_fds=True,
            )
        finally:
            output.close()
        start_time = _process_start_time(process.pid)
        _CHILDREN[process.pid] = process
        self.daemons.append(Daemon(name=name, pid=process.pid, start_time=start_time or 0, log=str(log)))
        self._save()

    def _daemon_died(self) -> str | None:
        for daemon in self.daemons:
            _reap(daemon.pid)
            if not daemon.alive():
                return self._failure(f"{daemon.name} exited during start-up", daemon.name)
        return None

    def _node_state_or_error(self) -> str:
        try:
            result = self.run(["scontrol", "show", "node", NODE_NAME], check=False, timeout_s=10)
            return " ".join((result.stdout + result.stderr).split())
        except SlurmClusterError as error:
            return str(error)

    def _failure(self, message: str, daemon_name: str) -> str:
        daemon = next((d for d in self.daemons if d.name == daemon_name), None)
        tails = []
        for path in filter(None, [daemon and daemon.log, str(self._root / "log" / f"{daemon_name}.out")]):
            try:
                lines = Path(path).read_text(errors="replace").strip().splitlines()[-8:]
            except (FileNotFoundError, PermissionError):
                continue
            if lines:
                tails.append(f"--- {path}:\n" + "\n".join(lines))
        return f"{message}; logs in {self._root / 'log'}" + ("\n" + "\n".join(tails) if tails else "")

    def _cancel_all_jobs(self, timeout_s: float) -> None:
        listing = self.run(["squeue", "--noheader", "--format=%i %T"], check=False, timeout_s=10).stdout.split("\n")
        active = [line.split()[0] for line in listing if line.strip() and line.split()[1] in ACTIVE_JOB_STATES]
        if not active:
            return
        self.run(["scancel", "--signal=KILL", "--full", *active], check=False, timeout_s=10)
        self.run(["scancel", *active], check=False, timeout_s=10)

        def drained() -> bool:
            states = self.run(["squeue", "--noheader", "--states=all", "--format=%T", "--jobs", ",".join(active)], check=False, timeout_s=10).stdout.split()
            return not ACTIVE_JOB_STATES.intersection(states)

        _wait_until(drained, timeout_s, lambda: f"jobs {', '.join(active)} still active {timeout_s} s after scancel")


def wait_for_path(path: str | os.PathLike, *, timeout_s: float = 60.0, poll_s: float = 0.1) -> Path:
    """Wait until ``path`` exists (e.g. a job's first checkpoint before it is signalled); returns it."""
    path = Path(path)
    _wait_until(path.exists, timeout_s, lambda: f"{path} did not appear within {timeout_s} s", poll_s=poll_s)
    return path


_CHILDREN: dict[int, subprocess.Popen] = {}


def _reap(pid: int) -> None:
    process = _CHILDREN.get(pid)
    if process is not None:
        process.poll()


def _terminate(daemon: Daemon, timeout_s: float) -> bool:
    """SIGTERM, then SIGKILL after ``timeout_s``, to this exact process (PID and start time both match)."""
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 10.0)):
        _reap(daemon.pid)
        if not daemon.alive():
            return True
        try:
            os.kill(daemon.pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            _reap(daemon.pid)
            if not daemon.alive():
                _CHILDREN.pop(daemon.pid, None)
                return True
            time.sleep(0.05)
    return False


def _wait_until(condition, timeout_s: float, describe_timeout, check_failure=None, poll_s: float = 0.05) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if check_failure is not None:
            failure = check_failure()
            if failure:
                raise SlurmClusterError(failure)
        try:
            if condition():
                return
        except _StartupFailed:
            raise
        except SlurmClusterError:
            pass
        if time.monotonic() > deadline:
            raise SlurmClusterError(describe_timeout())
        time.sleep(poll_s)
        poll_s = min(poll_s * 1.5, 0.5)


def _make_traversable(directory: Path) -> None:
    """Let the munge user reach ``directory`` (and so its socket); its parents must already allow that."""
    directory.chmod(directory.stat().st_mode | 0o055)
    for parent in directory.parents:
        if not parent.stat().st_mode & 0o001:
            raise SlurmClusterError(
                f"{parent} is not searchable by other users, so munged (user munge) cannot reach its socket "
                f"in {directory}; put the cluster directory elsewhere, e.g. under /tmp"
            )


def _node_resources() -> tuple[int, str, int]:
    """CPUs, topology and RealMemory (MB, 5% below what slurmd detects) of this machine, from ``slurmd -C``."""
    result = subprocess.run([_which("slurmd"), "-C"], capture_output=True, text=True, timeout=30)
    values = dict(item.split("=", 1) for item in result.stdout.split() if "=" in item)
    try:
        cpus = int(values["CPUs"])
        topology = " ".join(f"{key}={int(values[key])}" for key in ("Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore"))
        memory_mb = int(values["RealMemory"])
    except (KeyError, ValueError):
        raise SlurmClusterError(f"could not read CPUs/RealMemory from 'slurmd -C': {result.stdout!r} {result.stderr!r}") from None
    return cpus, topology, max(1, int(memory_mb * 0.95))


class _ConfigLock:
    """Serialises the check-and-write of /etc/slurm/slurm.conf between processes on this machine."""

    def __enter__(self):
        self.handle = open(LOCK_FILE, "a")
        fcntl.flock(self.handle, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


def _config_owner(text: str) -> Path | None:
    first = text.splitlines()[0] if text else ""
    return Path(first[len(MARKER):].strip()) if first.startswith(MARKER) else None


def system_config_owner() -> Path | None:
    """The state file (DIR/cluster.json) of the test cluster whose config is /etc/slurm/slurm.conf, if any."""
    try:
        return _config_owner(SYSTEM_CONFIG.read_text(errors="replace"))
    except FileNotFoundError:
        return None


def _claim_system_config(directory: Path, busy_wait_s: float) -> SlurmCluster:
    """Wait until no other live test cluster owns /etc/slurm/slurm.conf, then create this cluster's record.

    A config left by a cluster whose daemons are all gone (a crashed test) is put back as it was first.
    """
    deadline = time.monotonic() + busy_wait_s
    while True:
        with _ConfigLock():
            owner = _config_owner(SYSTEM_CONFIG.read_text(errors="replace")) if SYSTEM_CONFIG.exists() else None
            other = None
            if owner is not None:
                try:
                    other = SlurmCluster.load(owner.parent)
                except (SlurmClusterError, ValueError, TypeError, KeyError):
                    other = None
                if other is None or not any(d.alive() for d in other.daemons):
                    _restore_config_from(other.config_backup if other else None)
                    other = None
            if other is None:
                cpus, topology, memory_mb = _node_resources()
                cluster = SlurmCluster(
                    directory=str(directory), slurmctld_port=_free_port(), slurmd_port=_free_port(),
                    cpus=cpus, topology=topology, real_memory_mb=memory_mb, config_backup=None,
                )
                if SYSTEM_CONFIG.exists():
                    backup = directory / "slurm.conf.before"
                    shutil.copy2(SYSTEM_CONFIG, backup)
                    cluster.config_backup = str(backup)
                # Mark the config as ours right away so no other start can take it while daemons come up.
                SYSTEM_CONFIG.parent.mkdir(parents=True, exist_ok=True)
                _write_atomically(SYSTEM_CONFIG, f"{MARKER}{directory / STATE_NAME}\n")
                cluster._save()
                return cluster
        if time.monotonic() > deadline:
            raise SlurmClusterBusy(
                f"{SYSTEM_CONFIG} belongs to another running test cluster ({owner.parent}); "
                f"stop it with: python tests/slurm_cluster.py stop --dir {owner.parent}"
            )
        time.sleep(1.0)


def _install_system_config(cluster: SlurmCluster) -> None:
    with _ConfigLock():
        _write_atomically(SYSTEM_CONFIG, (Path(cluster.directory) / "slurm.conf").read_text())


def _release_system_config(cluster: SlurmCluster) -> None:
    with _ConfigLock():
        if not SYSTEM_CONFIG.exists():
            return
        if _config_owner(SYSTEM_CONFIG.read_text(errors="replace")) == Path(cluster.directory) / STATE_NAME:
            _restore_config_from(cluster.config_backup)


def _restore_config_from(backup: str | None) -> None:
    if backup and Path(backup).exists():
        _write_atomically(SYSTEM_CONFIG, Path(backup).read_text())
    else:
        SYSTEM_CONFIG.unlink(missing_ok=True)


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".dit-tmp")
    temporary.write_text(text)
    temporary.chmod(0o644)
    os.replace(temporary, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["start", "stop", "status"])
    parser.add_argument("--dir", required=True, help="folder holding the cluster's files and its state (cluster.json)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds allowed for start-up or for each stop step")
    parser.add_argument("--wait", type=float, default=0.0, help="seconds to wait for another test cluster to stop (start)")
    parser.add_argument("--profile", default=str(REPOSITORY_PROFILE),
                        help="Snakemake profile folder that start copies, adapted to the cluster, to DIR/snakemake-profile")
    args = parser.parse_args(argv)
    try:
        if args.action == "start":
            cluster = SlurmCluster.start(args.dir, timeout_s=args.timeout, busy_wait_s=args.wait)
            report = {**cluster.status(), "start_seconds": round(cluster.start_seconds, 2), "snakemake_args": cluster.snakemake_args()}
            if Path(args.profile).is_dir():
                profile = cluster.write_profile(args.profile, Path(cluster.directory) / "snakemake-profile")
                report["snakemake_profile"] = str(profile)
                print(f"run a workflow on it: snakemake --profile {profile}", file=sys.stderr)
            print(json.dumps(report, indent=2))
        elif args.action == "status":
            cluster = SlurmCluster.load(args.dir)
            report = cluster.status()
            print(json.dumps(report, indent=2))
            return 0 if report["running"] else 3
        else:
            SlurmCluster.load(args.dir).stop(timeout_s=args.timeout)
            print(f"stopped the cluster in {Path(args.dir).resolve()}")
    except SlurmClusterError as error:
        print(f"slurm_cluster {args.action}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
