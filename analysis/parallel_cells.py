"""Probe cells side by side in worker processes (the study's ``--jobs``).

A probe is a small network: training one keeps about one core busy, so on a machine with
several cores, several probes at once finish a study sooner than one probe with every thread.
Each worker is a fresh process (spawn) with its share of the threads (and the command's
environment, OpenMP's wait policy included: ``utility/openmp_wait.py``). A cell writes only its own
folder, under that folder's experiment lock, and the shared feature cache, whose files are
written atomically, so the workers need no other coordination.

The workers run in their own process group: Ctrl-C in a terminal (or SIGTERM) reaches the parent
alone, which passes it on once to every worker (a second one would stop a probe without its
checkpoint). Each worker's probe then saves at its next step, and the same command continues
where they stopped. An error in one cell stops the others the same way.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from utility.interrupt import Terminated, ctrl_c_raises
from utility.process_defaults import apply_cli_process_defaults

from .cells import Cell, ProbeSettings, run_cell

Work = tuple[Cell, Path, ProbeSettings]  # a cell, the root of its folder, its probe settings


_stopping: Any = None  # in a worker: the parent's event that says to start no more cells


def _start_worker(threads: int, stopping: Any) -> None:
    global _stopping
    _stopping = stopping
    os.setpgrp()  # out of the terminal's foreground group: signals come from the parent only
    torch.set_num_threads(threads)
    apply_cli_process_defaults()


def _run_timed(cell: Cell, root: Path, settings: ProbeSettings) -> tuple[dict[str, Any], float]:
    # A cell already handed to a worker when the parent was stopped must not start then.
    if _stopping is not None and _stopping.is_set():
        raise KeyboardInterrupt("stopped before the cell started")
    started = time.monotonic()
    return run_cell(cell, root, settings), time.monotonic() - started


def run_cells_side_by_side(work: Sequence[Work], workers: int, finished: Callable[[int, dict[str, Any], float], None]) -> None:
    """Runs every cell of ``work`` in ``workers`` processes, in the order given as workers free
    up; ``finished(index in work, results, seconds the cell took)`` as each ends."""
    threads = max(1, torch.get_num_threads() // workers)
    context = multiprocessing.get_context("spawn")
    stopping = context.Event()
    with (
        ctrl_c_raises(),
        ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker, initargs=(threads, stopping)) as pool,
    ):
        futures = {pool.submit(_run_timed, *item): index for index, item in enumerate(work)}
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for future in done:
                    results, seconds = future.result()  # a cell's error is raised here
                    finished(futures[future], results, seconds)
        except BaseException as stop:
            stopping.set()
            for future in pending:
                future.cancel()
            signum = signal.SIGTERM if isinstance(stop, Terminated) else signal.SIGINT
            for child in multiprocessing.active_children():
                os.kill(child.pid, signum)
            raise

