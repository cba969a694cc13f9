"""OpenMP's wait policy for the commands: idle torch threads sleep instead of spinning.

Torch's CPU threads are OpenMP threads (libgomp in the PyPI wheels). By default a thread that
finishes its share of a parallel operation spins for a while, waiting for the next one
(``OMP_WAIT_POLICY=ACTIVE`` behaviour). On a machine whose cores other jobs also want, the
spinning threads take the time slices the thread they wait for needs, and every operation
waits for a descheduled thread: a run slows down many times over and drifts with the load.
``PASSIVE`` makes waiting threads sleep. Measured with ``scripts/benchmark_drift.py`` on a
2-core AMD EPYC, two threads, the 256-wide pretraining recipe (s per update):

- idle machine: 0.177 spinning, 0.170 sleeping;
- four busy processes beside it (``--busy 4``), two runs each: 1.8-3.1 spinning (and drifting:
  the last updates 1.4-3.1x the first), 0.41-0.49 sleeping, 0.63 on one thread.

The cost: updates of a few milliseconds (a linear probe on cached features) take about 1.5x
as long on an idle machine (6 -> 9 ms), and an LSTM run on two threads 3.7x, which is why the
recurrent heads run one thread (``downstream.base.Expert.cpu_threads``); set
``OMP_WAIT_POLICY=ACTIVE`` to keep spinning (a value the user set always wins).

libgomp reads the policy once, when torch loads it, so no function called after the imports
can set it: the command files import this module before anything that imports torch. It acts
only in a process started as one of :data:`COMMANDS` (its ``__main__``), so importing the
library anywhere else changes nothing in the host process.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

WAIT_POLICY_ENV = "OMP_WAIT_POLICY"
POLICY = "PASSIVE"
REPO = Path(__file__).resolve().parent.parent
# The command files, relative to the repository: ``python FILE`` and ``python -m MODULE`` both
# run one of them as ``__main__`` (tests/test_openmp_wait.py: these are the files importing this).
COMMANDS = frozenset(
    {
        "run_pretrain.py",
        "run_downstream.py",
        "analysis/report.py",
        "analysis/layerwise.py",
        "analysis/proportion.py",
        "analysis/study.py",
        "analysis/tsne.py",
        "analysis/attention_map.py",
        "scripts/benchmark_drift.py",  # measures runs as the commands make them
        "scripts/pretraining_ablation.py",  # pretrains and probes as the commands do
    }
)


def started_as() -> str | None:
    """The command file this process runs (relative to the repository), None for anything else
    (a user's program, a test runner, ``python -m cProfile ...``)."""
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    if not path:
        return None
    try:
        return Path(path).resolve().relative_to(REPO).as_posix()
    except ValueError:
        return None


def _choose() -> Optional[str]:
    if started_as() not in COMMANDS or WAIT_POLICY_ENV in os.environ or "torch" in sys.modules:
        return None  # not a command, the user's choice, or too late to matter (tests/test_openmp_wait.py)
    os.environ[WAIT_POLICY_ENV] = POLICY
    return POLICY


CHOSEN: Optional[str] = _choose()  # what this module set (None: nothing)
