"""The one sandbox every model-written program runs in: the code task, the maths tool agent and the
planning tasks' `tool=program`.

A `Session` is one isolated process tree (sandbox/bwrap.py) holding a trusted driver
(sandbox/driver.py) that receives *inputs only* and returns what the program printed or returned;
the caller compares (sandbox/judge.py), so no expected output ever enters the sandbox. Each job has
a wall-clock limit inside (the driver) and a backstop outside (here): a session whose driver stops
answering is killed whole, and its jobs end as `timeout`. Nothing here raises on a bad program: every
failure is a `Result` with a status. Where isolation cannot be set up, `check_available` (and every
run) raises `SandboxUnavailable`, saying what is missing; no program is ever run without it.

    with Session(code, "stdin") as s:       results = [s.run(stdin=x) for x in inputs]
    with Session(code, "call", fn="f") as s: results = [s.run(args=(1, 2))]
"""
from __future__ import annotations

import ast
import json
import os
import select
import subprocess
import tempfile
import threading
import time
import warnings
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

from sandbox import cgroup, seccomp
from sandbox.bwrap import ENV, SandboxUnavailable, command, uid_pool
from sandbox.driver import encode

__all__ = ["Limits", "Result", "Session", "SandboxUnavailable", "check_available", "parse_python", "run_program",
           "run_stdin", "run_calls", "STATUSES"]

STATUSES = ("ok", "timeout", "memory", "output_limit", "error", "no_result")
DRIVER = (Path(__file__).parent / "driver.py").read_text()
STARTUP_S = 10.0  # backstop for the first answer (the sandbox and interpreter start)
SLACK_S = 2.0     # backstop beyond a job's own limit


_PARSE_LOCK = threading.Lock()


def parse_python(code: str) -> ast.Module:
    """`ast.parse`, one thread at a time: CPython 3.11's AST constructor keeps its recursion depth in
    state the threads share, and two parses at once can raise `SystemError: AST constructor
    recursion depth mismatch` (python/cpython#106905); the tool pool parses model programs in
    threads. Quiet: a model's `print(1_2x)` would print a SyntaxWarning to the log. Raises what
    ast.parse raises (SyntaxError, ...); never runs the code."""
    with _PARSE_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)
        return ast.parse(code)


FALLBACK_PROCESSES = 8  # without a cgroup: tasks per program, each with memory_mb / 8 of address space
SANDBOX_TASKS = 3       # the sandbox's own tasks beside the program's (bwrap, its pid 1, the driver)


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 2.0          # wall clock per job; the CPU limit is its whole seconds + 1
    memory_mb: int = 512            # the program's memory, all its processes together (sandbox/cgroup.py)
    processes: int = 32             # its processes and threads together
    open_files: int = 64
    file_mb: int = 16               # largest file written; also the size of /work and of /tmp
    output_bytes: int = 1 << 16     # stdout (or a call's result) kept per job; more is `output_limit`

    def __post_init__(self):
        if self.timeout_s <= 0 or min(self.memory_mb, self.processes, self.open_files, self.file_mb,
                                      self.output_bytes) < 1:
            raise ValueError(f"sandbox limits must be positive, got {self}")

    def caps(self, cgroup: bool) -> dict:
        """The driver's per-process caps. With a cgroup holding the program's total (memory_mb,
        processes), a process may take all of it. Without one, rlimits count per process, so the
        budget is split: at most FALLBACK_PROCESSES tasks (threads count: RLIMIT_NPROC), each with
        memory_mb / that many of address space, so processes x address space <= memory_mb (the
        defaults: 8 tasks of 64 MB; Python itself needs about 18 MB)."""
        if cgroup:
            return {"address_mb": self.memory_mb, "processes": self.processes}
        n = min(self.processes, FALLBACK_PROCESSES)
        # RLIMIT_NPROC counts the uid's tasks in the sandbox's user namespace, its own ones too
        return {"address_mb": max(1, self.memory_mb // n), "processes": n + SANDBOX_TASKS}


@dataclass(frozen=True)
class Result:
    """One job: `status` in STATUSES; `out` what it printed (stdin mode) or the JSON of what it
    returned (call mode), at most `Limits.output_bytes`; `err` the tail of its stderr or the error."""

    status: str
    out: str = ""
    err: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class Session:
    """One sandbox for one program. mode "stdin": every `run(stdin=...)` runs the program afresh;
    mode "call": the program is loaded once and every `run(args=...)` calls `fn(*args)`; args and the
    result are plain values (sandbox.driver.encode), the result's JSON in `Result.out`
    (sandbox.judge.read_value reads it back)."""

    def __init__(self, code: str, mode: str = "stdin", fn: str | None = None, limits: Limits = Limits()):
        if mode not in ("stdin", "call"):
            raise ValueError(f"unknown sandbox mode {mode!r}; allowed: stdin, call")
        if mode == "call" and not fn:
            raise ValueError("mode 'call' needs the function's name (fn)")
        self.mode, self.limits = mode, limits
        self.uid = uid_pool().get() if os.geteuid() == 0 else os.geteuid()
        self.budget = None
        self._err = tempfile.TemporaryFile()
        self._buf = b""
        self._first = True
        self._dead: str | None = None
        self._kills = self._closed_kills = 0  # the budget's OOM kills so far (at start-up: the first job's)
        filter_fd = None
        try:  # whatever fails here, nothing is left behind: cgroup, uid, descriptor
            filter_fd = seccomp.pipe_fd()
            self.budget = cgroup.make(limits.memory_mb, limits.processes + SANDBOX_TASKS)  # None: no cgroups here
            argv = command(DRIVER, limits.file_mb, filter_fd)
            self.proc = subprocess.Popen(self.budget.join_argv(argv) if self.budget else argv, stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=self._err, env=dict(ENV),
                                         start_new_session=True, pass_fds=(filter_fd,))
        except BaseException as e:
            self._release()
            if isinstance(e, seccomp.FilterUnavailable):
                raise SandboxUnavailable(str(e)) from e
            if isinstance(e, OSError):
                raise SandboxUnavailable(f"could not start the sandbox: {e}") from e
            raise
        finally:
            if filter_fd is not None:
                os.close(filter_fd)  # bwrap holds its own copy
        self._send({"code": code, "mode": mode, "fn": fn, "uid": self.uid,
                    "limits": {**asdict(limits), **limits.caps(self.budget is not None)}})

    def run(self, stdin: str = "", args: tuple = ()) -> Result:
        if self._dead:
            return Result("error", err=self._dead)
        r = self._job(stdin, args)
        kills, self._kills = self._kills, self.budget.oom_kills() if self.budget else self._closed_kills
        if r.status in ("error", "timeout") and self._kills > kills:
            return Result("memory", r.out, "over the program's memory budget (memory_mb, all its processes): "
                          "killed by the kernel", r.seconds)
        return r

    def _job(self, stdin: str, args: tuple) -> Result:
        t0 = time.monotonic()
        job = {"args": encode(tuple(args))} if self.mode == "call" else {"stdin": stdin}
        if not self._send(job):
            return self._end("error", "the sandbox ended: " + self._stderr())
        backstop = self.limits.timeout_s + SLACK_S + (STARTUP_S if self._first else 0.0)
        self._first = False
        line = self._read_line(t0 + backstop)
        if line is None:
            return self._end("timeout", f"the sandbox gave no answer in {backstop:.0f}s")
        if line == b"":
            return self._end("error", "the sandbox ended: " + self._stderr())
        try:
            msg = json.loads(line)
            return Result(msg["status"], msg["out"], msg["err"], float(msg["seconds"]))
        except (ValueError, KeyError, TypeError):
            return self._end("error", "malformed answer from the sandbox")

    def _send(self, msg: dict) -> bool:
        try:
            self.proc.stdin.write(json.dumps(msg).encode() + b"\n")
            self.proc.stdin.flush()
            return True
        except (BrokenPipeError, OSError):
            return False

    def _read_line(self, deadline: float) -> bytes | None:
        """The driver's next line; b"" at EOF; None at `deadline`. A line is at most a few times the
        output cap (JSON escapes), so this never buffers without bound."""
        fd, cap = self.proc.stdout.fileno(), 8 * self.limits.output_bytes + 65536
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or len(self._buf) > cap:
                return None
            if not select.select([fd], [], [], left)[0]:
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return b""
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line

    def _stderr(self) -> str:
        """What bwrap (or the driver) said on its way out."""
        try:
            self.proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            pass
        self._err.seek(0)
        return self._err.read(2000).decode(errors="replace").strip()

    def _end(self, status: str, why: str) -> Result:
        self._dead = why
        self.close()
        return Result(status, err=why)

    def close(self) -> None:
        if getattr(self, "proc", None) is not None and self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=0.5 + self.limits.timeout_s)
            except (OSError, subprocess.TimeoutExpired):
                pass
        if getattr(self, "proc", None) is not None and self.proc.poll() is None:
            try:  # the sandbox dies with bwrap (--die-with-parent): its pid namespace goes with it
                os.killpg(self.proc.pid, 9)
            except ProcessLookupError:
                pass
            self.proc.wait()
        if getattr(self, "proc", None) is not None:
            self.proc.stdout.close()
            self.proc = None
        self._release()

    def _release(self) -> None:
        if self.budget is not None:
            self._closed_kills = self.budget.oom_kills()  # a job that ended the session reads them after
            self.budget.close()  # after bwrap: kills what is left, removes the cgroup
            self.budget = None
        if self.uid is not None and os.geteuid() == 0:
            uid_pool().put(self.uid)
        self.uid = None
        if not self._err.closed:
            self._err.close()

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def run_stdin(code: str, inputs: list[str], limits: Limits = Limits()) -> list[Result]:
    """The program run once per input, each on that input as stdin."""
    with Session(code, "stdin", limits=limits) as s:
        return [s.run(stdin=x) for x in inputs]


def run_calls(code: str, fn: str, calls: list[tuple], limits: Limits = Limits()) -> list[Result]:
    """`fn(*args)` for each args tuple, the program loaded once."""
    with Session(code, "call", fn=fn, limits=limits) as s:
        return [s.run(args=a) for a in calls]


def run_program(code: str, limits: Limits = Limits()) -> Result:
    """The program run once with empty stdin (a tool call: what it prints is its answer)."""
    return run_stdin(code, [""], limits)[0]


@lru_cache(maxsize=1)
def _probe() -> str:
    try:
        r = run_program("print(6 * 7)", Limits(timeout_s=5.0))
    except SandboxUnavailable as e:
        return str(e)
    if r.ok and r.out.strip() == "42":
        # the filter holds: a user namespace (the first step of most escapes) is refused
        ns = run_program("import ctypes, errno\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                         "print(libc.unshare(0x10000000), errno.errorcode.get(ctypes.get_errno()))", Limits(timeout_s=5.0))
        if ns.ok and ns.out.split() == ["-1", "EPERM"]:
            return ""
        return f"the seccomp filter is not in force (unshare(CLONE_NEWUSER) gave {ns.status}: {(ns.out + ns.err).strip()})"
    hint = ("" if os.geteuid() == 0 else "; as an ordinary user bwrap needs unprivileged user namespaces "
            "(sysctl kernel.unprivileged_userns_clone=1, and on Ubuntu kernel.apparmor_restrict_unprivileged_userns=0)")
    return f"the sandbox could not run a test program ({r.status}: {r.err or r.out}){hint}"


def check_available() -> None:
    """Raise SandboxUnavailable, saying what is missing, unless programs can be run isolated here."""
    why = _probe()
    if why:
        raise SandboxUnavailable(f"model-written programs run only in marl's sandbox, and it is unavailable: {why}")
