"""Tools a tool agent can call.

`run_program` runs model-written Python in a child process with a wall-clock timeout, CPU,
memory, file-size and process limits, an empty working directory and an isolated interpreter
(`python -I`). It is a containment measure for the planning tasks, not a hardened sandbox: the
code task brings that. It never raises on bad programs; the failure is reported in the result.

It is called from worker threads (`roles.base.tool_pool`), so the child gets its limits from a
small driver that sets them before running the program, not from a `preexec_fn` (Python code
between fork and exec can deadlock when other threads hold locks); `start_new_session` (done in
C) gives the child its own process group, so a timeout kills everything it spawned.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass

_DRIVER = """import resource, sys
cpu, mem = int(sys.argv[1]), int(sys.argv[2]) << 20
for lim, v in ((resource.RLIMIT_CPU, cpu), (resource.RLIMIT_AS, mem), (resource.RLIMIT_FSIZE, 1 << 20),
               (resource.RLIMIT_NPROC, 64)):
    resource.setrlimit(lim, (v, v))
code = sys.argv[3]
del sys.argv[1:], resource, cpu, mem, lim, v
exec(compile(code, "<program>", "exec"), {"__name__": "__main__"})
"""


@dataclass(frozen=True)
class ProgramResult:
    ok: bool
    stdout: str
    error: str = ""


def run_program(code: str, timeout_s: float = 2.0, memory_mb: int = 512, max_output: int = 2000) -> ProgramResult:
    with tempfile.TemporaryDirectory(prefix="marl-tool-") as cwd:
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-c", _DRIVER, str(int(timeout_s) + 1), str(memory_mb), code], cwd=cwd,
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env={"PATH": "/usr/bin:/bin"}, start_new_session=True)
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
