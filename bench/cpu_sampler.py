"""Run ``python -m fleetca ARGS`` with a CPU-time sampling profiler that signals switch on and off.

    python bench/cpu_sampler.py OUTPUT serve --data-dir ...

SIGUSR1 starts sampling and SIGUSR2 stops it and writes OUTPUT in the
collapsed-stack format that ``bench/profiling.py`` reads, weighted in
microseconds of CPU. Samples come from ITIMER_PROF, which counts the CPU time
of the process, so time blocked in fsync or in epoll never produces a sample.
Python runs a signal handler only between bytecodes, and timer signals that
arrive during one long C call (OpenSSL, sqlite3) merge into one. Each sample
is therefore weighted with the CPU time since the previous one and charged to
the Python frame that was running, which is the caller of that C code. Only
the main thread's stack is recorded, which is where the asyncio event loop of
``fleetca serve`` runs.
"""

from __future__ import annotations

import runpy
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from types import FrameType

SAMPLE_INTERVAL_SECONDS = 0.002  # of process CPU time
CPU_WEIGHTS_HEADER = "# weights: microseconds of CPU"

_stacks: Counter[str] = Counter()
_last_cpu_seconds = 0.0


def _record(_signum: int, frame: FrameType | None) -> None:
    global _last_cpu_seconds
    now = time.process_time()
    weight = round((now - _last_cpu_seconds) * 1_000_000)
    _last_cpu_seconds = now
    names = []
    while frame is not None:
        code = frame.f_code
        names.append(f"{code.co_qualname} ({code.co_filename}:{frame.f_lineno})")
        frame = frame.f_back
    _stacks[";".join(reversed(names))] += weight


def _start(_signum: int, _frame: FrameType | None) -> None:
    global _last_cpu_seconds
    _stacks.clear()
    _last_cpu_seconds = time.process_time()
    signal.setitimer(signal.ITIMER_PROF, SAMPLE_INTERVAL_SECONDS, SAMPLE_INTERVAL_SECONDS)


def _stop_and_write(output: Path) -> None:
    signal.setitimer(signal.ITIMER_PROF, 0, 0)
    output.write_text(f"{CPU_WEIGHTS_HEADER}\n" + "".join(f"{stack} {weight}\n" for stack, weight in _stacks.items()))


def main() -> None:
    if len(sys.argv) < 3:
        raise SystemExit("usage: cpu_sampler.py OUTPUT FLEETCA-ARGS...")
    output = Path(sys.argv[1])
    signal.signal(signal.SIGPROF, _record)
    signal.signal(signal.SIGUSR1, _start)
    signal.signal(signal.SIGUSR2, lambda _signum, _frame: _stop_and_write(output))
    sys.argv = ["fleetca", *sys.argv[2:]]
    runpy.run_module("fleetca", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
