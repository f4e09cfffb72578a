"""Multi-node training on one machine: Lightning picks the cluster environment from the launcher's
variables, two "nodes" of one process train exactly what one node of two processes trains, and a
node that cannot reach its master fails with one line within a bounded time.

What this cannot check here: real machines talking over a network, and NCCL (CPU runs use gloo).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from lightning.fabric.plugins.environments import LightningEnvironment, SLURMEnvironment, TorchElasticEnvironment
from lightning.fabric.utilities.rank_zero import rank_zero_only
from safetensors.torch import load_file

from omnivis.data.datamodule import epoch_batches
from omnivis.engine.cluster import (
    MASTER_TIMEOUT_ENV,
    bounded_join,
    check_cluster_settings,
    joins_a_process_group,
    master_timeout_s,
    wait_for_master,
)
from omnivis.engine.trainer import TrainerConfig, build_trainer
from omnivis.errors import ConfigError

LAUNCHER_VARS = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "GROUP_RANK", "LOCAL_RANK", "RANK", "WORLD_SIZE",
                 "LOCAL_WORLD_SIZE", MASTER_TIMEOUT_ENV)
SEED, STEPS, BATCH = 3, 6, 16
RUN = ["train", "classify", "--data", "builtin:digits", "--img-size", "8", "--channels", "1",
       "--model", "omnivis_resnet_tiny", "--batch-size", str(BATCH), "--max-steps", str(STEPS),
       "--accelerator", "cpu", "--strategy", "ddp", "--workers", "0", "--no-progress", "--seed", str(SEED), "--json"]


def _is_launcher_var(name: str) -> bool:
    return name in LAUNCHER_VARS or name.startswith(("SLURM_", "TORCHELASTIC_", "PET_"))


@pytest.fixture
def launcher_env():
    """Set a launcher's variables for one test (none of the machine's own leak in); restores the
    environment and Lightning's rank afterwards (building a Trainer sets both)."""
    saved, saved_rank = dict(os.environ), getattr(rank_zero_only, "rank", 0)
    for name in [name for name in os.environ if _is_launcher_var(name)]:
        del os.environ[name]

    def set_vars(**values) -> None:
        os.environ.update({name: str(value) for name, value in values.items()})

    yield set_vars
    os.environ.clear()
    os.environ.update(saved)
    rank_zero_only.rank = saved_rank


def _trainer(tmp_path: Path, **config):
    settings = dict(accelerator="cpu", devices="1", num_nodes=2, strategy="ddp", epochs=1, progress=False)
    settings.update(config)
    return build_trainer(TrainerConfig(**settings), tmp_path)


def test_lightning_environment_from_node_rank_and_gloo_on_cpu(tmp_path, launcher_env):
    launcher_env(MASTER_ADDR="10.1.2.3", MASTER_PORT=29555, NODE_RANK=1, LOCAL_RANK=0)
    trainer = _trainer(tmp_path)
    environment = trainer.strategy.cluster_environment
    assert type(environment) is LightningEnvironment and environment.creates_processes_externally
    assert (trainer.node_rank, trainer.global_rank, trainer.world_size) == (1, 1, 2)
    assert (environment.main_address, environment.main_port) == ("10.1.2.3", 29555)
    assert trainer.strategy._get_process_group_backend() == "gloo"  # what DDP on CPU initializes
    assert joins_a_process_group(trainer)


def test_torchrun_and_srun_environments_are_lightnings_own(tmp_path, launcher_env):
    launcher_env(TORCHELASTIC_RUN_ID="job", MASTER_ADDR="10.1.2.3", MASTER_PORT=29500, RANK=3, WORLD_SIZE=4,
                 LOCAL_RANK=1, GROUP_RANK=1, LOCAL_WORLD_SIZE=2)
    trainer = _trainer(tmp_path / "torchrun", devices="2")
    assert type(trainer.strategy.cluster_environment) is TorchElasticEnvironment
    assert (trainer.node_rank, trainer.local_rank, trainer.global_rank, trainer.world_size) == (1, 1, 3, 4)

    for name in [name for name in os.environ if _is_launcher_var(name)]:
        del os.environ[name]
    launcher_env(SLURM_NTASKS=4, SLURM_NTASKS_PER_NODE=2, SLURM_NNODES=2, SLURM_PROCID=2, SLURM_LOCALID=0,
                 SLURM_NODEID=1, SLURM_NODELIST="gpu[07-08]", SLURM_JOB_ID=123456, SLURM_JOB_NAME="omnivis")
    trainer = _trainer(tmp_path / "slurm", devices="2")
    environment = trainer.strategy.cluster_environment
    assert type(environment) is SLURMEnvironment
    assert (trainer.node_rank, trainer.global_rank, trainer.world_size) == (1, 2, 4)
    assert (environment.main_address, environment.main_port) == ("gpu07", 15000 + 3456)  # Lightning's SLURM port


def test_settings_that_cannot_form_a_group_fail_in_one_line(tmp_path, launcher_env):
    launcher_env(TORCHELASTIC_RUN_ID="job", MASTER_ADDR="127.0.0.1", MASTER_PORT=29500, RANK=1, WORLD_SIZE=4,
                 LOCAL_RANK=0, GROUP_RANK=1)
    with pytest.raises(ConfigError, match=r"--num-nodes 2 --devices 1: .*world size \(4\)"):
        check_cluster_settings(_trainer(tmp_path / "torchrun"))

    for name in [name for name in os.environ if _is_launcher_var(name)]:
        del os.environ[name]
    launcher_env(MASTER_ADDR="127.0.0.1", MASTER_PORT=29500, NODE_RANK=2, LOCAL_RANK=0)
    with pytest.raises(ConfigError, match="rank is 2 .*numbers nodes 0 to 1"):
        check_cluster_settings(_trainer(tmp_path / "rank"))

    del os.environ["MASTER_PORT"]
    os.environ["NODE_RANK"] = "1"
    with pytest.raises(ConfigError, match="MASTER_PORT is not set on this node"):
        check_cluster_settings(_trainer(tmp_path / "port"))


def test_master_timeout_comes_from_the_environment(launcher_env):
    assert master_timeout_s() == 600.0
    launcher_env(**{MASTER_TIMEOUT_ENV: "2.5"})
    assert master_timeout_s() == 2.5
    for bad in ("0", "-1", "soon", "inf", "nan"):
        os.environ[MASTER_TIMEOUT_ENV] = bad
        with pytest.raises(ConfigError, match=f"{MASTER_TIMEOUT_ENV} must be a number of seconds > 0, got '{bad}'"):
            master_timeout_s()


def test_waiting_for_the_master_is_bounded():
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        started = time.monotonic()
        wait_for_master("127.0.0.1", listening.getsockname()[1], 5.0, what="--num-nodes 2", shown="x")
        assert time.monotonic() - started < 1.0
    with socket.socket() as bound:  # holds the port, so nothing can listen on it
        bound.bind(("127.0.0.1", 0))
        port = bound.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(ConfigError) as error:
            wait_for_master("127.0.0.1", port, 1.0, what="--num-nodes 2",
                            shown=f"MASTER_ADDR=127.0.0.1 MASTER_PORT={port}")
        assert 1.0 <= time.monotonic() - started < 3.0
    assert str(error.value).startswith(f"--num-nodes 2: cannot reach the master at MASTER_ADDR=127.0.0.1 "
                                       f"MASTER_PORT={port} within 1 s (connection refused); start node 0 first")


def test_a_single_process_run_is_left_alone(tmp_path, launcher_env):
    trainer = build_trainer(TrainerConfig(accelerator="cpu", devices="1", epochs=1, progress=False), tmp_path)
    assert not joins_a_process_group(trainer)
    with bounded_join(trainer):  # no check, no watchdog thread
        pass


# --- the command itself, as the nodes run it -------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _node_env(**values) -> dict:
    """The test's environment without any launcher's variables, plus ``values``. One thread per
    process in every run: Lightning gives each of the processes it starts itself cpu_count / devices
    threads but leaves externally started ones alone, and CPU kernels round differently per thread count."""
    env = {name: value for name, value in os.environ.items() if not _is_launcher_var(name)}
    env.update({"OMP_NUM_THREADS": "1", **{name: str(value) for name, value in values.items()}})
    return env


def _omnivis(*args: str) -> list[str]:
    return [sys.executable, "-m", "omnivis.cli", *args]


def _finish(procs: list[subprocess.Popen], timeout: float) -> list[tuple[int, str, str]]:
    """Wait for every process (killing all of them once ``timeout`` has passed): (rc, stdout, stderr) each."""
    deadline = time.monotonic() + timeout
    results = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for other in procs:
                other.kill()
            out, err = proc.communicate()
            raise AssertionError(f"{' '.join(proc.args)} still ran after {timeout:g} s:\n{out}\n{err}") from None
        results.append((proc.returncode, out, err))
    return results


def _spawn(command: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_node_without_its_master_fails_in_one_line_within_the_timeout(tmp_path):
    """Node 1 with nothing at MASTER_ADDR:MASTER_PORT, and node 0 with no node 1, each given 3 s."""
    with socket.socket() as bound:  # a port nothing listens on, held for the whole test
        bound.bind(("127.0.0.1", 0))
        dead_port = bound.getsockname()[1]
        lonely_port = _free_port()
        nodes = ["--devices", "1", "--num-nodes", "2"]
        worker = _spawn(_omnivis(*RUN, *nodes, "--out", str(tmp_path / "worker")),
                        _node_env(MASTER_ADDR="127.0.0.1", MASTER_PORT=dead_port, NODE_RANK=1, LOCAL_RANK=0,
                                  **{MASTER_TIMEOUT_ENV: 3}))
        master = _spawn(_omnivis(*RUN, *nodes, "--out", str(tmp_path / "master")),
                        _node_env(MASTER_ADDR="127.0.0.1", MASTER_PORT=lonely_port, NODE_RANK=0, LOCAL_RANK=0,
                                  **{MASTER_TIMEOUT_ENV: 3}))
        # the bound: startup (imports, reading digits) + 3 s; without it each waits torch's 30 minutes
        (worker_rc, _, worker_err), (master_rc, _, master_err) = _finish([worker, master], timeout=180)
    errors = [line for line in worker_err.splitlines() if line.startswith("error:")]
    assert worker_rc == 2 and errors == [
        f"error: --num-nodes 2: cannot reach the master at MASTER_ADDR=127.0.0.1 MASTER_PORT={dead_port} within "
        f"3 s (connection refused); start node 0 first, check the address and port, or set {MASTER_TIMEOUT_ENV} "
        "(seconds)"], worker_err
    errors = [line for line in master_err.splitlines() if line.startswith("error:")]
    assert master_rc == 2 and len(errors) == 1, master_err
    assert errors[0].startswith(f"error: --num-nodes 2: waited 3 s at MASTER_ADDR=127.0.0.1 MASTER_PORT={lonely_port} "
                                "for the other processes (2 in all) to join"), master_err
    assert "Traceback" not in worker_err + master_err
    assert not (tmp_path / "master" / "model.safetensors").exists()


@pytest.fixture(scope="module")
def one_node_two_processes(tmp_path_factory) -> Path:
    """The reference: one node, two processes that Lightning starts itself."""
    out = tmp_path_factory.mktemp("multinode") / "one-node"
    [(rc, stdout, stderr)] = _finish([_spawn(_omnivis(*RUN, "--devices", "2", "--num-nodes", "1", "--out", str(out)),
                                             _node_env())], timeout=600)
    assert rc == 0, stderr
    assert json.loads(stdout)["train_steps"] == STEPS
    return out


def _assert_same_run(out: Path, reference: Path) -> None:
    # gloo sums the two ranks' gradients in a fixed order, and both runs give each rank the same
    # batches and one thread: the weights agree bit for bit, not just to a tolerance
    ours, theirs = load_file(out / "model.safetensors"), load_file(reference / "model.safetensors")
    assert ours.keys() == theirs.keys()
    different = [name for name in ours if not torch.equal(ours[name], theirs[name])]
    assert not different, different
    metrics, expected = (json.loads((folder / "metrics.json").read_text()) for folder in (out, reference))
    assert metrics["train_steps"] == expected["train_steps"] == STEPS
    assert metrics["accuracy"] == expected["accuracy"]
    # each step was an all-reduce both ranks took part in, on batches of the same count on either rank
    train_size = json.loads((out / "config.json").read_text())["split"]["train_size"]
    per_rank = [len(epoch_batches(train_size, BATCH, train=True, seed=SEED, rank=rank, world_size=2))
                for rank in (0, 1)]
    assert per_rank[0] == per_rank[1] >= STEPS


def test_two_nodes_of_one_process_train_what_one_node_of_two_does(tmp_path, one_node_two_processes):
    """Two `omnivis train` commands as two nodes (NODE_RANK 0 and 1) writing to one shared folder."""
    out, port = tmp_path / "shared", _free_port()
    command = _omnivis(*RUN, "--devices", "1", "--num-nodes", "2", "--out", str(out))
    procs = [_spawn(command, _node_env(MASTER_ADDR="127.0.0.1", MASTER_PORT=port, NODE_RANK=rank, LOCAL_RANK=0,
                                       WORLD_SIZE=2))
             for rank in (1, 0)]  # node 1 first: it waits for its master
    (worker_rc, worker_out, worker_err), (master_rc, master_out, master_err) = _finish(procs, timeout=600)
    assert worker_rc == 0 and master_rc == 0, f"{worker_err}\n{master_err}"
    assert worker_out.strip() == ""  # only rank 0 reports
    assert json.loads(master_out)["bundle"] == str(out)
    _assert_same_run(out, one_node_two_processes)


def test_two_nodes_under_torchrun(tmp_path, one_node_two_processes):
    """The same two nodes, each started by torchrun (TorchElasticEnvironment)."""
    out, port = tmp_path / "shared", _free_port()
    procs = [_spawn([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                     "--node-rank", str(rank), "--master-addr", "127.0.0.1", "--master-port", str(port),
                     "-m", "omnivis.cli", *RUN, "--devices", "1", "--num-nodes", "2", "--out", str(out)],
                    _node_env())
             for rank in (1, 0)]
    # node 1 ends first (rank 0 evaluates): a failed node 1 would leave node 0's torchrun waiting 5
    # minutes at its exit barrier, so it is stopped at once
    (worker_rc, worker_out, worker_err), = _finish(procs[:1], timeout=600)
    if worker_rc != 0:
        procs[1].kill()
        procs[1].communicate()
    assert worker_rc == 0, worker_err
    [(master_rc, master_out, master_err)] = _finish(procs[1:], timeout=600)
    assert master_rc == 0, master_err
    assert worker_out.strip() == "" and json.loads(master_out)["bundle"] == str(out)
    _assert_same_run(out, one_node_two_processes)
