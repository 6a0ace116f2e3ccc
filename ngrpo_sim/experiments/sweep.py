"""Sweeps of simulated training: every method under every config, here, in processes or on Ray.

A sweep is the grid methods x configs, a config (``DynamicsConfig`` for one-token answers,
``SequenceConfig`` for answers made of tokens) holding the hyper-parameters, the policy
and the seeds of one setting. Each (method, config) pair is one task, ``dynamics.simulate``: tasks
share no state and a task's randomness comes from its config alone, so it gives the same
``RunRecord`` in whichever process runs it (bit for bit on machines with the same numpy build;
tested against this process). Where the tasks run:

* ``workers=1`` (default): in this process, one task after the other, a progress bar over all steps;
* ``workers=N``: in N local processes (``concurrent.futures``, spawn start method);
* ``ray_address=ADDRESS``: as Ray tasks of one CPU each (``pip install ngrpo-sim[ray]``; Ray is
  imported only then). ``"local"`` starts a Ray instance on this machine for the sweep, ``"auto"``
  joins the cluster this machine belongs to, ``"ray://head-node:10001"`` connects to a remote head
  node through Ray Client; every node needs ngrpo-sim installed. A process already connected to Ray
  (``ray.init`` called before) uses its connection.

``store`` names a folder where each finished task is written, atomically, to a file of its own
named by its full settings, as soon as it finishes: a sweep stopped half-way and started again with
the same store runs only the tasks it lacks. A task that raises does not stop the others: the sweep
runs every task it can and then raises ``TasksFailed``, which holds the finished runs and each
failure.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import multiprocessing
import os
import signal
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ngrpo_sim.base import checks
from ngrpo_sim.base.files import write_atomically
from ngrpo_sim.methods.presets import Method, get_method
from ngrpo_sim.simulators.dynamics import RunRecord
from ngrpo_sim.simulators.loop_config import LoopConfig, check_memory
from ngrpo_sim.simulators.training_loop import train


@dataclass(frozen=True)
class Task:
    """One simulation: a method and a config that can train it. ``sweep_tasks`` makes every task
    and checks it there, once; what runs tasks (``run_tasks``, the workers) trusts them."""

    method: Method
    config: LoopConfig

    def __iter__(self):
        return iter((self.method, self.config))


VERSION = importlib.metadata.version("ngrpo-sim")
"""The installed version, part of every stored result's key: a new version recomputes."""


def sweep_tasks(methods: list[Method | str], configs: list[LoopConfig]) -> list[Task]:
    """The tasks in the sweep's result order: every method under the first config, then the next.
    Refuses, with ``ValueError``, a method that a config cannot train, before any task runs."""
    methods = [get_method(m) if isinstance(m, str) else m for m in methods]
    for config in configs:
        if not isinstance(config, LoopConfig):
            raise ValueError(f"configs must hold DynamicsConfig or SequenceConfig objects, got "
                             f"{config!r}")
        for method in methods:
            config.check_method(method)
    return [Task(method, config) for config in configs for method in methods]


def run_task(method: Method, config: LoopConfig) -> RunRecord:
    """One task, without a progress bar of its own (the sweep's bar counts finished tasks)."""
    return train(method, config, progress=False)


def _task_text(task: Task) -> str:
    return repr((VERSION, *task))


def task_file(store: Path, task: Task) -> Path:
    """Where ``store`` keeps a task: named by a hash of the method, the config and the version."""
    return Path(store) / f"{hashlib.sha256(_task_text(task).encode()).hexdigest()[:20]}.npz"


def save_task(store: Path, task: Task, run_record: RunRecord) -> Path:
    """Write a finished task to ``store``, whole or not at all."""
    metrics = {f"metric_{name}": values for name, values in run_record.metrics.items()}
    arrays = io.BytesIO()
    np.savez(arrays, task=_task_text(task), ks=run_record.ks, pass_at_k=run_record.pass_at_k,
             initial_success=run_record.initial_success, final_success=run_record.final_success,
             **metrics)
    return write_atomically(task_file(store, task), arrays.getvalue())


def load_task(store: Path, task: Task) -> RunRecord | None:
    """The stored result of ``task``, or None when ``store`` does not hold it."""
    path = task_file(store, task)
    if not path.is_file():
        return None
    with np.load(path) as saved:
        if str(saved["task"]) != _task_text(task):
            return None
        metrics = {name.removeprefix("metric_"): saved[name] for name in saved.files
                   if name.startswith("metric_")}
        method, config = task
        return RunRecord(method.name, config, metrics=metrics, pass_at_k=saved["pass_at_k"],
                          ks=saved["ks"], initial_success=saved["initial_success"],
                          final_success=saved["final_success"])


class TasksFailed(RuntimeError):
    """Some tasks raised; every other task ran to its end.

    ``finished`` maps a task's index to its ``RunRecord`` (with a store, each is kept there too),
    ``errors`` maps each failed task's index to what it raised; ``tasks`` is the whole list.
    """

    def __init__(self, tasks: list[Task], finished: dict[int, RunRecord],
                 errors: dict[int, Exception]):
        first = min(errors)
        method, config = tasks[first]
        super().__init__(f"{len(errors)} of {len(tasks)} runs failed; the first, {method.name} "
                         f"({config.mode}): {describe_error(errors[first])}")
        self.tasks, self.finished, self.errors = tasks, finished, errors


def describe_error(error: BaseException) -> str:
    """One line: the exception's type and the first line of its message."""
    lines = str(error).strip().splitlines()
    return type(error).__name__ + (f": {lines[0]}" if lines else "")


Finished = Iterator[tuple[int, RunRecord | Exception]]
"""What the ways of running yield: each task's index with its run, or what it raised."""


def _here(tasks: list[Task], pending: list[int], bar: tqdm) -> Finished:
    for index in pending:
        try:
            run_record = train(*tasks[index], progress=bar)
        except Exception as error:  # the task failed, not the sweep: the others still run
            yield index, error
        else:
            yield index, run_record


def _ignore_interrupts() -> None:
    # Ctrl-C reaches every process of the terminal's group: the sweep's process answers it and
    # stops the workers, which would otherwise each print a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _in_processes(tasks: list[Task], pending: list[int], bar: tqdm, workers: int) -> Finished:
    # spawn: a forked child would inherit this process's threads (tqdm's, BLAS's) in any state.
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context,
                               initializer=_ignore_interrupts)
    finished = False
    try:
        futures = {pool.submit(run_task, *tasks[index]): index for index in pending}
        for future in as_completed(futures):
            index = futures[future]
            bar.update(tasks[index].config.steps)
            try:
                yield index, future.result()
            except Exception as error:  # raised in the worker, or the worker died
                yield index, error
        finished = True
    finally:
        if not finished:  # stopped: a running task would otherwise hold the pool until its end
            # ProcessPoolExecutor.terminate_workers arrives in Python 3.14; until then the
            # processes are only reachable here.
            for process in list((getattr(pool, "_processes", None) or {}).values()):
                process.terminate()
        pool.shutdown(cancel_futures=True)


def _on_ray(tasks: list[Task], pending: list[int], bar: tqdm, address: str) -> Finished:
    try:
        import ray
    except ImportError as error:
        raise ValueError(f"ray_address={address!r} needs Ray, which is not installed here: "
                         "pip install 'ngrpo-sim[ray]'") from error
    started = not ray.is_initialized()
    if started:
        ray.init(address=address)
    running = {}
    try:
        remote = ray.remote(num_cpus=1)(run_task)
        running = {remote.remote(*tasks[index]): index for index in pending}
        while running:
            (done,), _ = ray.wait(list(running), num_returns=1)
            index = running.pop(done)
            bar.update(tasks[index].config.steps)
            try:
                result = ray.get(done)
            except Exception as error:  # the task raised on its node (RayTaskError) or was lost
                result = error
            yield index, result
    finally:
        for reference in running:
            ray.cancel(reference)
        if started:
            ray.shutdown()


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity where the system has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def check_where_to_run(workers: int, ray_address: str | None,
                       names: tuple[str, str] = ("workers", "ray_address")) -> None:
    """Refuse, with ``ValueError``, a bad ``workers`` or ``ray_address``, or both at once, and more
    workers than the cores of this machine (they would only slow each other down and multiply the
    memory). ``names`` are what the caller calls the two (the command line: its flags)."""
    workers_name, ray_name = names
    checks.integer(workers_name, workers, low=1)
    if ray_address is not None and (not isinstance(ray_address, str) or not ray_address.strip()):
        raise ValueError(f"{ray_name} must be a Ray address such as 'local', 'auto' or "
                         f"'ray://head-node:10001', got {ray_address!r}")
    if ray_address is not None and workers != 1:
        raise ValueError(f"{_given(workers_name, workers)} and {_given(ray_name, ray_address)}: "
                         "Ray runs one task per CPU of its cluster; give one of the two")
    cores = usable_cores()
    if workers > cores:
        raise ValueError(f"{_given(workers_name, workers)} is more than the {cores} CPU "
                         f"core{'s' if cores > 1 else ''} of this machine, where each worker "
                         f"takes one; give {_given(workers_name, cores)} or fewer (or a Ray "
                         "cluster)")


def _given(name: str, value) -> str:
    """A value as the user gave it: ``--workers 2`` on the command line, ``workers=2`` in Python."""
    return f"{name} {value}" if name.startswith("--") else f"{name}={value!r}"


def check_fits_in_memory(configs: list[LoopConfig], tasks: int, workers: int = 1,
                         ray_address: str | None = None) -> None:
    """Refuse, with ``ValueError``, a sweep of ``tasks`` runs of which one would not fit in memory,
    counting ``workers`` local processes side by side (a Ray task runs in its node's memory)."""
    at_once = 1 if ray_address is not None else min(workers, tasks)
    for config in configs:
        check_memory(config, at_once)


def run_sweep(methods: list[Method | str], configs: list[LoopConfig], *, workers: int = 1,
              ray_address: str | None = None, store: Path | None = None,
              description: str = "sweep") -> list[RunRecord]:
    """Every method under every config: ``[simulate(m, c) for c in configs for m in methods]``.

    The tasks run in ``workers`` local processes (1: this process) or on the Ray cluster at
    ``ray_address``; ``store`` is a folder that keeps finished tasks for a later call (see the
    module doc). Raises ``ValueError`` for a bad argument, or when Ray is asked for and missing,
    and ``TasksFailed`` after the last task when some tasks raised.
    """
    return run_tasks(sweep_tasks(methods, configs), workers=workers, ray_address=ray_address,
                     store=store, description=description)


def run_tasks(tasks: list[Task], *, workers: int = 1, ray_address: str | None = None,
              store: Path | None = None, description: str = "sweep") -> list[RunRecord]:
    """``[simulate(method, config) for method, config in tasks]``, run as ``run_sweep`` runs its
    grid: for experiments that are not a grid (tasks from several ``sweep_tasks`` calls, run in one
    pool of processes)."""
    check_where_to_run(workers, ray_address)
    tasks = list(tasks)
    if not all(isinstance(task, Task) for task in tasks):
        raise ValueError("tasks must be made by sweep_tasks, which checks that each config can "
                         "train its method")
    configs = list(dict.fromkeys(config for _, config in tasks))
    check_fits_in_memory(configs, len(tasks), workers, ray_address)  # before the bar, not begun
    results = {}
    if store is not None:
        Path(store).mkdir(parents=True, exist_ok=True)
        results = {index: run_record for index, task in enumerate(tasks)
                   if (run_record := load_task(store, task)) is not None}
    pending = [index for index in range(len(tasks)) if index not in results]
    total = sum(config.steps for _, config in tasks)
    done = sum(tasks[index].config.steps for index in results)
    with tqdm(total=total, initial=done, desc=description, unit="step") as bar:
        if ray_address is not None:
            finished = _on_ray(tasks, pending, bar, ray_address)
        elif workers > 1:
            finished = _in_processes(tasks, pending, bar, workers)
        else:
            finished = _here(tasks, pending, bar)
        errors = {}
        for index, result in finished:
            if isinstance(result, Exception):
                errors[index] = result
                continue
            results[index] = result
            if store is not None:
                save_task(store, tasks[index], result)
    if errors:
        raise TasksFailed(tasks, results, errors) from errors[min(errors)]
    return [results[index] for index in range(len(tasks))]
