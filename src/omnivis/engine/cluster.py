"""Joining a multi-process run (several nodes, or several devices on one) within a bounded time.

Lightning picks the cluster environment itself (``TorchElasticEnvironment`` under torchrun,
``SLURMEnvironment`` under srun, else ``LightningEnvironment``, which reads ``MASTER_ADDR``,
``MASTER_PORT``, ``NODE_RANK`` and ``LOCAL_RANK``); the address, port and ranks used here are the
ones it resolved. What we add is a bound on the one step that otherwise waits silently:
``torch.distributed.init_process_group`` waits for the master and for every other process for its
``timeout``, 30 minutes by default, and that same timeout bounds every collective of the run, so
it is not the knob to shorten. Instead:

1. a process other than rank 0 first opens a TCP connection to the master's address and port,
   retrying until ``OMNIVIS_MASTER_TIMEOUT`` seconds have passed, and otherwise fails with one
   line naming ``MASTER_ADDR`` and ``MASTER_PORT`` (a ``ConfigError``);
2. while the process group forms, a watchdog thread gives the same number of seconds for it to
   form (rank 0 waiting for nodes that never start, a node started with the wrong world size); past
   that it prints one ``error:`` line and ends the process with exit code 2 (the process is then
   blocked inside torch, where no exception can reach it). Once the group has formed, the
   watchdog is gone and collectives keep torch's own timeout.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator

import lightning.pytorch as pl
import torch
from lightning.fabric.plugins.environments import LightningEnvironment
from lightning.pytorch.strategies.launchers import _SubprocessScriptLauncher

from omnivis.errors import ConfigError

MASTER_TIMEOUT_ENV = "OMNIVIS_MASTER_TIMEOUT"
DEFAULT_MASTER_TIMEOUT_S = 600.0
_ANNOUNCE_AFTER_S = 5.0  # a worker says it is waiting once the master has not answered for this long


def master_timeout_s() -> float:
    """Seconds a process waits for the master, and then for the process group to form
    (``OMNIVIS_MASTER_TIMEOUT``, default 600)."""
    raw = os.environ.get(MASTER_TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_MASTER_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise ConfigError(f"{MASTER_TIMEOUT_ENV} must be a number of seconds > 0, got '{raw}'")
    return value


def joins_a_process_group(trainer: pl.Trainer) -> bool:
    """Whether this process will itself call ``init_process_group`` in ``trainer.fit``: more than one
    process in all, each running the command (started by torchrun, srun, by hand, or by Lightning
    re-running the command for a node's other devices). ``ddp_spawn``'s parent joins no group: it
    only starts the processes that do."""
    return trainer.world_size > 1 and isinstance(trainer.strategy.launcher, _SubprocessScriptLauncher)


def master_address(trainer: pl.Trainer) -> tuple[str, int, str]:
    """(address, port, ``MASTER_ADDR=... MASTER_PORT=...`` as the message shows it) as the cluster
    environment Lightning chose resolves them."""
    environment = trainer.strategy.cluster_environment
    address, port = environment.main_address, int(environment.main_port)
    shown = f"MASTER_ADDR={address}"
    if isinstance(environment, LightningEnvironment) and "MASTER_ADDR" not in os.environ:
        shown += " (not set: Lightning's default)"
    return address, port, f"{shown} MASTER_PORT={port}"


def check_cluster_settings(trainer: pl.Trainer) -> None:
    """One-line errors for settings that cannot form a process group, before anything waits."""
    if not joins_a_process_group(trainer):
        return
    environment = trainer.strategy.cluster_environment
    nodes = trainer.num_nodes
    try:  # torchrun's WORLD_SIZE or SLURM's --nodes/--ntasks-per-node against --num-nodes/--devices
        environment.validate_settings(num_devices=trainer.strategy.num_processes, num_nodes=nodes)
    except ValueError as error:
        raise ConfigError(f"--num-nodes {nodes} --devices {trainer.strategy.num_processes}: {error}") from None
    if not 0 <= trainer.node_rank < nodes:
        raise ConfigError(f"this node's rank is {trainer.node_rank} (NODE_RANK), but --num-nodes {nodes} "
                          f"numbers nodes 0 to {nodes - 1}")
    # Lightning would pick a free port of this machine: right on node 0, never on another node
    if isinstance(environment, LightningEnvironment) and trainer.global_rank != 0 and "MASTER_PORT" not in os.environ:
        raise ConfigError(f"--num-nodes {nodes}: MASTER_PORT is not set on this node (rank {trainer.global_rank}); "
                          "set MASTER_ADDR and MASTER_PORT to node 0's address and port on every node")


def wait_for_master(address: str, port: int, timeout_s: float, *, what: str, shown: str) -> None:
    """Return once a TCP connection to ``address:port`` opens; a ``ConfigError`` after ``timeout_s``.

    Args:
        what: how the message names the run, e.g. ``--num-nodes 2``.
        shown: the address as the message shows it (``MASTER_ADDR=... MASTER_PORT=...``).
    """
    started = time.monotonic()
    deadline = started + timeout_s
    announced = False
    while True:
        remaining = deadline - time.monotonic()
        try:
            with socket.create_connection((address, port), timeout=max(0.1, min(5.0, remaining))):
                return
        except OSError as error:
            reason = error.strerror or str(error) or type(error).__name__
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ConfigError(
                f"{what}: cannot reach the master at {shown} within {timeout_s:g} s ({reason.lower()}); "
                f"start node 0 first, check the address and port, or set {MASTER_TIMEOUT_ENV} (seconds)"
            )
        if not announced and time.monotonic() - started >= _ANNOUNCE_AFTER_S:
            print(f"omnivis: waiting for the master at {shown} (up to {timeout_s:g} s, {MASTER_TIMEOUT_ENV})",
                  file=sys.stderr, flush=True)
            announced = True
        time.sleep(min(0.5, remaining))


class _GroupWatchdog:
    """Ends the process with one line when the process group has not formed within ``timeout_s``."""

    def __init__(self, timeout_s: float, message: str) -> None:
        self.timeout_s, self.message = timeout_s, message
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="omnivis-join-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        while not self._stop.wait(0.2):
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                return
            if time.monotonic() >= deadline:
                # the main thread is blocked inside torch's rendezvous: only ending the process stops it
                sys.stderr.write(f"error: {self.message}\n")
                sys.stderr.flush()
                os._exit(2)


@contextlib.contextmanager
def bounded_join(trainer: pl.Trainer) -> Iterator[None]:
    """Around ``trainer.fit``: the checks and the bounded waits described in this module's docstring.

    A no-op for a single process.
    """
    if not joins_a_process_group(trainer):
        yield
        return
    check_cluster_settings(trainer)
    timeout_s = master_timeout_s()
    address, port, shown = master_address(trainer)
    nodes, world, rank = trainer.num_nodes, trainer.world_size, trainer.global_rank
    devices = trainer.strategy.num_processes
    what = f"--num-nodes {nodes}" if nodes > 1 else f"--devices {devices}"
    start_all = (f"start every node with --num-nodes {nodes} --devices {devices}, its own node rank "
                 f"(0 to {nodes - 1}) and the same MASTER_ADDR and MASTER_PORT" if nodes > 1
                 else "check that no process failed at startup")
    if rank != 0:
        wait_for_master(address, port, timeout_s, what=what, shown=shown)
        message = (f"{what}: connected to {shown}, but the {world} processes did not all join within "
                   f"{timeout_s:g} s; check that node 0 runs this command there, {start_all}, "
                   f"or set {MASTER_TIMEOUT_ENV} (seconds)")
    else:
        message = (f"{what}: waited {timeout_s:g} s at {shown} for the other processes ({world} in all) to join; "
                   f"{start_all}, or set {MASTER_TIMEOUT_ENV} (seconds)")
    watchdog = _GroupWatchdog(timeout_s, message)
    watchdog.start()
    try:
        yield
    finally:
        watchdog.stop()
