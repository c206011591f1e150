"""Start `python app.py` as a user would, for the app benchmarks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(timeout: float = 180.0, root: str = ROOT, env: dict | None = None, script: str = "app.py"):
    """Start the app (bundled model, offline) of the checkout at `root` on a free port, with `env`
    added to the environment (or another `script` taking --port); return (process, url, seconds
    to serve)."""
    port = free_port()
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", **(env or {}))
    start = time.perf_counter()
    server = subprocess.Popen([sys.executable, script, "--port", str(port)], cwd=root, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return server, url, time.perf_counter() - start
        except OSError:
            time.sleep(0.1)
        if server.poll() is not None or time.perf_counter() - start > timeout:
            server.kill()
            raise SystemExit("the app did not start")


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))] if values else float("nan")
