"""Running ``nexus-otel`` as a real subprocess for end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from .ports import free_port

REPO = Path(__file__).resolve().parent.parent


def cli_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a user's shell: no OTEL_* but what the test sets, the repo importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["NEXUS_OTEL_DATA_DIR"] = str(data_dir)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def nexus_otel(*args: str, env: dict[str, str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run the ``nexus-otel`` command and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "nexus_otel.cli", *args], env=env, cwd=cwd,
        capture_output=True, text=True, timeout=timeout,
    )


class Served:
    """``nexus-otel serve TARGET`` on a free loopback port, stopped with SIGTERM like a user would."""

    def __init__(self, target: str, env: dict[str, str], cwd: Path, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "nexus_otel.cli", "serve", target, "--host", "127.0.0.1",
             "--port", str(self.port), *extra],
            env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        deadline = time.monotonic() + 30
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"serve exited with {self.process.returncode}: {self.process.stderr.read()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("serve did not answer /healthz within 30 s")
            time.sleep(0.05)

    def stop(self) -> tuple[int, str]:
        """SIGTERM (uvicorn shuts down gracefully: the app stops, spans are flushed)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode, self.process.stderr.read() if self.process.stderr else ""
