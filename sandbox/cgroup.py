"""One memory and process budget per program, over all its processes: a cgroup per sandbox.

Where the trainer may make cgroups (root, with cgroup v2's memory and pids controllers delegated
to its own cgroup, or v1's memory and pids hierarchies, as on this project's VMs), each Session
gets one: `memory_mb` is the program's total (swap included where the kernel accounts it, so
it cannot page out past the budget), `processes` its task count. bwrap is started inside it
(`join_argv`: a shell writes its own pid into the cgroup, then execs bwrap), so every process of
the sandbox is counted from its first instruction. Going over the budget is the kernel's
cgroup-local OOM kill of a program process (they volunteer: oom_score_adj 1000, set by the
driver); the trainer, outside the cgroup, is never the one killed. `oom_kills()` counts them, so
the session reports the job as `memory`. The cgroup is killed and removed when the session ends.

Where no cgroup can be made (an ordinary user without delegation) `make` returns None and the
driver falls back to per-process caps small enough that processes x address space stays within
the budget (sandbox.Limits.caps).
"""
from __future__ import annotations

import itertools
import os
import signal
import time
from functools import lru_cache
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
_SEQ = itertools.count()


def _own(controller: str) -> str | None:
    """This process's cgroup path in `controller`'s v1 hierarchy ("" for v2's), or None."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, names, path = line.split(":", 2)
        if (controller == "" and names == "" and line.startswith("0::")) or controller in names.split(","):
            return path
    return None


@lru_cache(maxsize=1)
def layout() -> tuple[str, dict[str, Path]] | None:
    """("v1" | "v2", {"memory": parent dir, "pids": parent dir}) where this process may make child
    cgroups with both controllers, else None (checked once by making and removing one)."""
    if os.geteuid() != 0:
        return None  # without root, only a delegated v2 subtree would do; marl does not look for one
    v2 = _own("")
    if (ROOT / "cgroup.controllers").exists() and v2 is not None:
        parent = ROOT / v2.lstrip("/")
        ctl = (parent / "cgroup.subtree_control")
        if ctl.exists() and {"memory", "pids"} <= set(ctl.read_text().split()):
            dirs = {"memory": parent, "pids": parent}
            return _usable("v2", dirs)
        return None
    mem, pids = _own("memory"), _own("pids")
    if mem is None or pids is None or not (ROOT / "memory").is_dir() or not (ROOT / "pids").is_dir():
        return None
    dirs = {"memory": ROOT / "memory" / mem.lstrip("/"), "pids": ROOT / "pids" / pids.lstrip("/")}
    return _usable("v1", dirs)


def _usable(version: str, dirs: dict[str, Path]) -> tuple[str, dict[str, Path]] | None:
    """(version, dirs) where a child cgroup can be made there, the leftovers of killed trainers
    swept first; else None."""
    if not _can_make(dirs):
        return None
    sweep(dirs.values())
    return version, dirs


def sweep(parents) -> list[Path]:
    """Remove the empty cgroups a killed trainer left (marl-<pid>-<n> whose pid is gone): a
    SIGKILLed trainer never ends its sessions, and bwrap dies with it (--die-with-parent), so they
    are empty. Returns those removed."""
    gone = []
    for parent in set(parents):
        for d in parent.glob("marl-*-*"):
            try:
                pid = int(d.name.split("-")[1])
            except ValueError:
                continue
            if _alive(pid):
                continue
            try:
                d.rmdir()
                gone.append(d)
            except OSError:
                pass  # still has processes: left alone
    return gone


def _alive(pid: int) -> bool:
    """A process that is neither gone nor a zombie (a killed trainer not yet reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _can_make(dirs: dict[str, Path]) -> bool:
    probe = [d / f"marl-probe-{os.getpid()}" for d in set(dirs.values())]
    try:
        for p in probe:
            p.mkdir()
        return True
    except OSError:
        return False
    finally:
        for p in probe:
            try:
                p.rmdir()
            except OSError:
                pass


class Budget:
    """The cgroup(s) of one sandbox (see the module docstring)."""

    def __init__(self, version: str, parents: dict[str, Path], memory_mb: int, processes: int):
        name = f"marl-{os.getpid()}-{next(_SEQ)}"
        self.version = version
        self.dirs = sorted({p / name for p in parents.values()})
        self.memory = parents["memory"] / name
        self.pids = parents["pids"] / name
        for d in self.dirs:
            d.mkdir()
        try:
            limit = str(memory_mb << 20)
            if version == "v2":
                _write(self.memory / "memory.max", limit)
                if (self.memory / "memory.swap.max").exists():
                    _write(self.memory / "memory.swap.max", "0")
                _write(self.pids / "pids.max", str(processes))
            else:
                _write(self.memory / "memory.limit_in_bytes", limit)
                if (self.memory / "memory.memsw.limit_in_bytes").exists():  # after the memory limit, as v1 requires
                    _write(self.memory / "memory.memsw.limit_in_bytes", limit)
                _write(self.pids / "pids.max", str(processes))
        except OSError:
            self.close()
            raise

    def join_argv(self, argv: list[str]) -> list[str]:
        """`argv` run by a shell that first moves itself into the cgroup(s): every process the
        command starts is inside from its first instruction."""
        procs = [str(d / "cgroup.procs") for d in self.dirs]
        script = 'for f; do [ "$f" = -- ] && break; echo $$ > "$f" || exit 121; shift; done; shift; exec "$@"'
        return ["/bin/sh", "-c", script, "sh", *procs, "--", *argv]

    def oom_kills(self) -> int:
        """Processes the kernel killed for going over the memory budget so far."""
        f = self.memory / ("memory.events" if self.version == "v2" else "memory.oom_control")
        try:
            for line in f.read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except OSError:
            pass
        return 0

    def peak_mb(self) -> float:
        """The most memory the sandbox's processes held at once (v1: max_usage; v2: memory.peak)."""
        f = self.memory / ("memory.peak" if self.version == "v2" else "memory.max_usage_in_bytes")
        try:
            return int(f.read_text()) / (1 << 20)
        except (OSError, ValueError):
            return float("nan")

    def close(self) -> None:
        """Kill whatever is left in the cgroup(s), then remove them."""
        for d in self.dirs:
            for _ in range(50):
                try:
                    pids = [int(p) for p in (d / "cgroup.procs").read_text().split()]
                except OSError:
                    break
                if not pids:
                    break
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                time.sleep(0.01)
            try:
                d.rmdir()
            except OSError:
                pass


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def make(memory_mb: int, processes: int) -> Budget | None:
    """A Budget for one sandbox, or None where this process cannot make cgroups."""
    found = layout()
    return None if found is None else Budget(found[0], found[1], memory_mb, processes)
