"""Profiles of fleetca during the timed flows, and their summaries.

Two profiles are taken at once. ``bench/cpu_sampler.py`` inside the server
samples CPU time only. py-spy, attached from outside, samples wall-clock time
including idle waits, which shows where the event loop blocks. ``python
bench/profiling.py FILE [--top N]`` prints, from either one's collapsed-stack
output, the functions with the most samples of their own ("self") and with the
most samples anywhere on the stack ("total").
"""

from __future__ import annotations

import argparse
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

SAMPLES_PER_SECOND = 200
# py-spy writes frames as "function (path/to/file.py:LINE)"; the line is dropped so that
# all samples of one function count together.
_FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")
_LIBRARY_PREFIX = re.compile(r"^.*/(site-packages|src|lib/python3\.\d+)/")
CPU_WEIGHTS_HEADER = "# weights: microseconds of CPU"


class PySpyRecorder:
    """py-spy record attached to a running process, writing raw collapsed stacks of wall-clock time."""

    def __init__(self, pid: int, output: Path) -> None:
        if shutil.which("py-spy") is None and not (Path(sys.executable).parent / "py-spy").exists():
            raise RuntimeError("py-spy is not installed; bench/run --profile installs it with pip")
        binary = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        self.output = output
        self.process = subprocess.Popen(
            [binary, "record", "--pid", str(pid), "--rate", str(SAMPLES_PER_SECOND), "--format", "raw",
             "--idle", "--output", str(output)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(output.with_suffix(".log"), "wb"))
        # py-spy needs a moment to attach; samples before that would be lost.
        time.sleep(1.0)

    def stop(self) -> None:
        """Stop sampling; py-spy writes its output when interrupted."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def short_frame(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = _LIBRARY_PREFIX.sub("", match.group("file"))
    return f"{match.group('function')} ({path})"


def _package(frame: str) -> str:
    """Return the top-level package or module of a shortened frame, such as "sqlalchemy" or "asyncio"."""
    inside = frame.rpartition(" (")[2].rstrip(")")
    if inside.startswith("<"):
        return "python internals"
    return inside.split("/", 1)[0].removesuffix(".py")


def _load(path: Path) -> tuple[list[tuple[list[str], int]], bool]:
    """Read the main thread's stacks; py-spy also samples other threads, whose stacks start in threading."""
    text = path.read_text()
    stacks = []
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = [short_frame(f) for f in stack.split(";") if f]
        if frames and not frames[0].startswith("Thread._bootstrap "):
            stacks.append((frames, int(count_text)))
    return stacks, text.startswith(CPU_WEIGHTS_HEADER)


def summarize(path: Path, top: int, certificates: int | None = None) -> str:
    """Return tables of where the samples in ``path`` fall: by package, by ACME resource and by function."""
    stacks, cpu_weighted = _load(path)
    total = sum(weight for _, weight in stacks)
    if not total:
        return f"{path}: no samples"
    by_package: Counter[str] = Counter()
    by_resource: Counter[str] = Counter()
    self_weight: Counter[str] = Counter()
    total_weight: Counter[str] = Counter()
    fleetca_total: Counter[str] = Counter()
    for frames, weight in stacks:
        by_package[_package(frames[-1])] += weight
        self_weight[frames[-1]] += weight
        for frame in set(frames):
            total_weight[frame] += weight
            if frame.rpartition(" (")[2].startswith("fleetca/"):
                fleetca_total[frame] += weight
        by_resource[_resource(frames)] += weight

    if cpu_weighted:
        seconds = total / 1e6
        heading = f"{path}: {seconds:.2f} s of CPU in the main thread"
    else:
        seconds = total / SAMPLES_PER_SECOND
        heading = f"{path}: {total} wall-clock samples of the main thread at {SAMPLES_PER_SECOND}/s ({seconds:.1f} s)"
    if certificates:
        heading += f", {certificates} certificates, {seconds * 1000 / certificates:.1f} ms per certificate"

    def table(title: str, counter: Counter[str], limit: int) -> list[str]:
        rows = ["", title]
        for name, weight in counter.most_common(limit):
            share = weight / total
            per_certificate = f"  {share * seconds * 1000 / certificates:6.2f} ms/cert" if certificates else ""
            rows.append(f"  {100 * share:5.1f}%{per_certificate}  {name}")
        return rows

    lines = [heading]
    lines += table("by package of the running frame (C code counts for the Python frame that called it):",
                   by_package, top)
    lines += table("by ACME resource handler (anywhere below it on the stack):", by_resource, top)
    lines += table(f"top {top} fleetca functions by total (anywhere on the stack):", fleetca_total, top)
    lines += table(f"top {top} functions by self:", self_weight, top)
    return "\n".join(lines)


def expand(path: Path, function: str, certificates: int | None = None, limit: int = 15) -> str:
    """Return how the time under ``function`` (a frame name prefix) divides among the functions it calls."""
    stacks, cpu_weighted = _load(path)
    scale = 1e6 if cpu_weighted else SAMPLES_PER_SECOND
    callees: Counter[str] = Counter()
    inside = 0
    for frames, weight in stacks:
        positions = [i for i, frame in enumerate(frames) if frame.startswith(function)]
        if not positions:
            continue
        # Recursion would count a sample twice; the outermost call is the one that counts.
        position = positions[0]
        inside += weight
        callee = frames[position + 1] if position + 1 < len(frames) else "(self)"
        callees[callee] += weight
    if not inside:
        return f"{function}: no samples"
    unit = "ms/cert" if certificates else "ms"
    divisor = certificates or 1
    lines = [f"{function}: {inside / scale * 1000 / divisor:.2f} {unit} in all"]
    for callee, weight in callees.most_common(limit):
        lines.append(f"  {weight / scale * 1000 / divisor:6.2f} {unit}  {callee}")
    return "\n".join(lines)


def _resource(frames: list[str]) -> str:
    """Name the request handler or background task that a stack belongs to."""
    for index, frame in enumerate(frames):
        if frame.startswith("acme_endpoint.<locals>.endpoint") and index + 1 < len(frames):
            return f"{frames[index + 1]} and the endpoint wrapper"
        if frame.startswith("acme_endpoint.<locals>.endpoint"):
            return "endpoint wrapper (nonce, headers, request log)"
        if frame.startswith("validate_challenge "):
            return frame + " (background task)"
    if any(f.startswith("RequestResponseCycle.run_asgi") for f in frames):
        return "ASGI and middleware outside the endpoint"
    if any("h11_impl" in f or "httptools_impl" in f for f in frames):
        return "uvicorn HTTP parsing outside the application"
    return "event loop, TLS and other"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="Summarize a collapsed-stack profile by package, ACME resource "
                                                 "and function.")
    parser.add_argument("file", type=Path, help="NAME.cpu.txt or NAME.wall.txt written by bench/run --profile")
    parser.add_argument("--top", type=int, default=30, help="rows in each table (default 30)")
    parser.add_argument("--certificates", type=int, help="certificates issued while sampling, for ms per certificate")
    parser.add_argument("--expand", action="append", default=[], metavar="FUNCTION",
                        help="also show how the time under FUNCTION divides among its callees; repeatable")
    args = parser.parse_args(argv)
    print(summarize(args.file, args.top, args.certificates))
    for function in args.expand:
        print()
        print(expand(args.file, function, args.certificates))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
