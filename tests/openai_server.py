"""A real OpenAI-compatible server for the tests and the benchmark: `transformers serve` on a free
loopback port, serving a local model directory on the CPU (DESIGN.md: starts in seconds, serves
/v1/completions and /v1/chat/completions). Offline: a model name that is not a local directory is
refused at once instead of being looked up on the hub.

Imported as `openai_server` (tests/ is on sys.path, as for fake_engine).
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`transformers serve` in its own process group; `log` collects its output (request lines at INFO)."""

    def __init__(self, log: Path, port: int | None = None, timeout: float = 180.0, args: tuple[str, ...] = ()):
        """`args`: more `transformers serve` options (e.g. --continuous-batching)."""
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.log = Path(log)
        exe = Path(sys.executable).with_name("transformers")
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([str(exe), "serve", "--host", "127.0.0.1", "--port", str(self.port),
                                          "--device", "cpu", "--log-level", "info", *args], stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"transformers serve did not start on port {self.port}:\n{self.tail()}")
            time.sleep(0.5)

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def kill(self) -> None:
        """As a crash would: SIGKILL, no shutdown."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_size(self) -> int:
        return self.log.stat().st_size if self.log.exists() else 0


def max_in_flight(log_text: str) -> int:
    """The most generate requests the server held at once, from its log: each request logs
    "[Request received]" on arrival and uvicorn's access line when its answer is sent."""
    most = now = 0
    for line in log_text.splitlines():
        if "[Request received]" in line:
            now += 1
            most = max(most, now)
        elif re.search(r'"POST /v1/(chat/)?completions HTTP/1\.1" \d+', line):
            now -= 1
    return most
