"""Sampling a server with py-spy during the timed flows, and summarizing the samples.

``python bench/profiling.py FILE [--top N]`` prints, from py-spy's raw
(collapsed-stack) output, the functions with the most samples of their own
("self") and with the most samples anywhere on the stack ("total").
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


class PySpyRecorder:
    """py-spy record attached to a running process, writing raw collapsed stacks."""

    def __init__(self, pid: int, output: Path) -> None:
        if shutil.which("py-spy") is None and not (Path(sys.executable).parent / "py-spy").exists():
            raise RuntimeError("py-spy is not installed; bench/run --profile installs it with pip")
        binary = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        self.output = output
        self.process = subprocess.Popen(
            [binary, "record", "--pid", str(pid), "--rate", str(SAMPLES_PER_SECOND), "--format", "raw",
             "--nonblocking", "--output", str(output)],
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
    path = match.group("file")
    for marker in ("site-packages/", "/src/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{match.group('function')} ({path})"


def summarize(path: Path, top: int) -> str:
    self_samples: Counter[str] = Counter()
    total_samples: Counter[str] = Counter()
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [short_frame(f) for f in stack.split(";") if f]
        if not frames:
            continue
        samples += count
        self_samples[frames[-1]] += count
        for frame in set(frames):
            total_samples[frame] += count
    if not samples:
        return f"{path}: no samples"
    lines = [f"{path}: {samples} samples at {SAMPLES_PER_SECOND}/s ({samples / SAMPLES_PER_SECOND:.1f} s of CPU)",
             "", f"top {top} by self samples:"]
    lines += [f"  {100 * n / samples:5.1f}%  {frame}" for frame, n in self_samples.most_common(top)]
    lines += ["", f"top {top} by total samples (anywhere on the stack):"]
    lines += [f"  {100 * n / samples:5.1f}%  {frame}" for frame, n in total_samples.most_common(top)]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="Summarize py-spy raw output by function.")
    parser.add_argument("file", type=Path, help="py-spy record --format raw output")
    parser.add_argument("--top", type=int, default=30, help="functions to list in each table (default 30)")
    args = parser.parse_args(argv)
    print(summarize(args.file, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
