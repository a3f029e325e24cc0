"""One memory budget per program, over all its processes (sandbox/cgroup.py), and the per-process
shares where no cgroup can be made."""
from __future__ import annotations

import threading

import pytest

import sandbox
from sandbox import Limits, Session, cgroup
from sandbox.attacks import fan_out

# 12 children x 200 MB, each under the per-process cap; the budget is 256 MB for all of them
FAN = fan_out().format(comm="marl-fan-test")
needs_cgroup = pytest.mark.skipif(cgroup.layout() is None, reason="this process cannot make cgroups (not root, "
                                  "or no memory and pids controllers): the per-process shares apply instead")


def held(r) -> int:
    return max([int(x.split()[1]) for x in r.out.splitlines() if x.startswith("held ")], default=0)


@needs_cgroup
def test_the_programs_processes_share_one_budget_and_a_neighbour_is_unaffected():
    benign = {}
    s = Session(FAN, limits=Limits(timeout_s=2.0, memory_mb=256))
    dirs = list(s.budget.dirs)
    assert all(d.is_dir() for d in dirs)
    t = threading.Thread(target=lambda: benign.update(r=sandbox.run_program("print(6 * 7)", Limits(timeout_s=5.0))))
    t.start()
    r = s.run()
    peak, kills = s.budget.peak_mb(), s.budget.oom_kills()
    s.close()
    t.join()
    assert r.status == "memory" and "over the program's memory budget" in r.err, r
    assert held(r) <= 256 and kills >= 1
    assert peak <= 256  # the cgroup's own high-water mark: every process of the sandbox, driver included
    assert benign["r"].status == "ok" and benign["r"].out == "42\n"
    assert not any(d.exists() for d in dirs)  # removed with the session


def test_without_a_cgroup_the_budget_is_split_over_the_processes(monkeypatch):
    assert Limits().caps(cgroup=True) == {"address_mb": 512, "processes": 32}
    assert Limits().caps(cgroup=False) == {"address_mb": 64, "processes": 8 + 3}  # + bwrap's and the driver's
    assert Limits(memory_mb=256, processes=4).caps(cgroup=False) == {"address_mb": 64, "processes": 4 + 3}
    monkeypatch.setattr(cgroup, "layout", lambda: None)
    r = sandbox.run_program(FAN, Limits(timeout_s=2.0, memory_mb=256))
    assert held(r) == 0, r  # no child could fill 200 MB within its 32 MB share
    threads = ("import threading\nts = [threading.Thread(target=sum, args=(range(10 ** 5),)) for _ in range(4)]\n"
               "[t.start() for t in ts]\n[t.join() for t in ts]\nprint(len(bytearray(20 << 20)))")
    r = sandbox.run_program(threads, Limits(timeout_s=5.0))  # threads and 20 MB fit the 64 MB share
    assert r.status == "ok" and r.out == f"{20 << 20}\n", r


def test_cgroup_v2_files_and_the_joining_shell(monkeypatch, tmp_path):
    """A v2 tree (a fake one: this project's machines have v1): the budget's files, and the shell
    that moves itself into the cgroup before it execs the command."""
    import subprocess

    (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "cgroup.subtree_control").write_text("memory pids\n")
    monkeypatch.setattr(cgroup, "ROOT", tmp_path)
    monkeypatch.setattr(cgroup, "_own", lambda controller: "/job" if controller == "" else None)
    monkeypatch.setattr(cgroup.os, "geteuid", lambda: 0)
    cgroup.layout.cache_clear()
    try:
        b = cgroup.make(256, 16)
        assert b.version == "v2" and b.dirs == [b.memory] and b.memory.parent == tmp_path / "job"
        assert (b.memory / "memory.max").read_text() == str(256 << 20) and (b.memory / "pids.max").read_text() == "16"
        p = subprocess.run(b.join_argv(["/bin/echo", "inside"]), capture_output=True, text=True)
        assert p.stdout == "inside\n" and int((b.memory / "cgroup.procs").read_text()) > 1
        (b.memory / "cgroup.procs").write_text("")
        (b.memory / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\n")
        assert b.oom_kills() == 2
        for f in b.memory.iterdir():
            f.unlink()
        b.close()
        assert not b.memory.exists()
    finally:
        cgroup.layout.cache_clear()


@needs_cgroup
def test_a_killed_trainers_cgroups_are_swept_and_a_live_ones_kept():
    """A SIGKILLed trainer leaves its sessions' (empty) cgroups: the next one removes them."""
    import subprocess
    import sys

    code = ("import os, sandbox\ns = sandbox.Session('import time\\ntime.sleep(30)')\n"
            "print(s.budget.memory, flush=True)\ns.run()")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    left = cgroup.Path(p.stdout.readline().strip())
    p.kill()
    p.wait()
    live = cgroup.make(64, 4)
    try:
        parents = cgroup.layout()[1].values()
        for _ in range(100):  # bwrap and the program die with it (--die-with-parent), not at once
            cgroup.sweep(parents)
            if not left.exists():
                break
            cgroup.time.sleep(0.05)
        assert not left.exists() and live.memory.exists()  # a live trainer's (this one's) stays
    finally:
        live.close()


def test_a_session_that_cannot_start_leaves_nothing_behind(monkeypatch):
    """Every failed start returns its uid, cgroup and descriptor: more failures than the uid pool
    holds still fail at once, and a working sandbox follows."""
    import os

    import sandbox.bwrap as bw

    def broken():
        raise bw.SandboxUnavailable("no bwrap: test")

    fds = len(os.listdir("/proc/self/fd"))
    monkeypatch.setattr(bw, "bwrap_path", broken)
    for _ in range(bw.UIDS + 2):
        with pytest.raises(sandbox.SandboxUnavailable, match="no bwrap: test"):
            Session("print(1)")
    monkeypatch.undo()
    assert len(os.listdir("/proc/self/fd")) == fds
    if cgroup.layout() is not None:
        assert not [d for p in cgroup.layout()[1].values() for d in p.glob(f"marl-{os.getpid()}-*")]
    assert sandbox.run_program("print(6 * 7)").out == "42\n"


@needs_cgroup
def test_program_processes_volunteer_for_the_oom_killer_and_a_start_up_kill_is_memory():
    r = sandbox.run_program("print(open('/proc/self/oom_score_adj').read())")
    assert r.out.strip() == "1000", r
    r = sandbox.run_program("print(1)", Limits(memory_mb=8))  # the driver itself does not fit
    assert r.status == "memory" and "memory budget" in r.err, r
