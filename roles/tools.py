"""Tools a tool agent can call.

`run_program` runs model-written Python in a child process with a wall-clock timeout, CPU,
memory, file-size and process limits, an empty working directory and an isolated interpreter
(`python -I`). It is a containment measure for the planning tasks, not a hardened sandbox: the
code task brings that. It never raises on bad programs; the failure is reported in the result.
"""
from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
from dataclasses import dataclass


@dataclass(frozen=True)
class ProgramResult:
    ok: bool
    stdout: str
    error: str = ""


def _limits(cpu_s: int, memory_mb: int) -> None:  # runs in the child before exec
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s))
    resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
    resource.setrlimit(resource.RLIMIT_NPROC, (64, 64))
    os.setsid()  # own process group, so a timeout kills everything it spawned


def run_program(code: str, timeout_s: float = 2.0, memory_mb: int = 512, max_output: int = 2000) -> ProgramResult:
    with tempfile.TemporaryDirectory(prefix="marl-tool-") as cwd:
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-c", code], cwd=cwd, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={"PATH": "/usr/bin:/bin"},
                preexec_fn=lambda: _limits(int(timeout_s) + 1, memory_mb),
            )
        except OSError as e:
            return ProgramResult(False, "", f"could not start: {e}")
        try:
            out, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, 9)
            except ProcessLookupError:
                pass
            proc.communicate()
            return ProgramResult(False, "", f"timeout after {timeout_s}s")
    stdout = out.decode(errors="replace")[:max_output]
    if proc.returncode != 0:
        tail = err.decode(errors="replace").strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
        return ProgramResult(False, stdout, tail[0][:200])
    return ProgramResult(True, stdout)
