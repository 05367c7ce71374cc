"""``monailabel start_server`` for tests and benchmarks: the MONAI Label app on a free loopback port.

MONAI Label runs in its own virtual environment (``.venv-label``, ``make label-install``; override
with ``MEDUNIC_LABEL_PYTHON``). The server is started as ``python -m monailabel.main start_server``
(what the ``monailabel`` script runs, without its reliance on the ``python`` of ``PATH``) in its own
session, with its working folder, DICOMweb cache and session store in a temporary folder, and is
stopped with SIGTERM (uvicorn's graceful shutdown), SIGKILL after a grace period.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Mapping

import requests

from orthanc import LOOPBACK, free_port

REPO = Path(__file__).resolve().parents[1]
APP_DIR = REPO / "apps" / "monailabel_medunic"
LABEL_PYTHON = Path(os.environ.get("MEDUNIC_LABEL_PYTHON", REPO / ".venv-label" / "bin" / "python"))


def label_python() -> Path:
    """The MONAI Label environment's interpreter; a clear error when it is missing."""
    if not LABEL_PYTHON.exists():
        raise RuntimeError(f"{LABEL_PYTHON} is missing: run `make label-install` (MONAI Label's own environment)")
    return LABEL_PYTHON


class LabelServer:
    """One ``monailabel start_server`` process (see the module docstring).

    Args:
        root: a fresh folder (working folder, caches, log).
        studies: the ``--studies`` value (a DICOMweb root).
        conf: the ``--conf`` pairs (``bundle_path`` ...).
        start_timeout: seconds to wait for ``/info/``.
    """

    def __init__(self, root: str | os.PathLike, studies: str, conf: Mapping[str, str], start_timeout: float = 300.0):
        self.root = Path(root)
        self.studies = studies
        self.conf = dict(conf)
        self.start_timeout = float(start_timeout)
        self.port = 0
        self.process: subprocess.Popen | None = None
        self.log_file = self.root / "monailabel.log"
        self.started_seconds = 0.0

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def cache_dir(self) -> Path:
        return self.root / "dicomweb-cache"

    def command(self) -> list[str]:
        cmd = [str(label_python()), "-m", "monailabel.main", "start_server", "--app", str(APP_DIR)]
        cmd += ["--studies", self.studies, "--host", LOOPBACK, "--port", str(self.port)]
        for key, value in self.conf.items():
            cmd += ["--conf", key, value]
        return cmd

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MONAI_LABEL_")}
        env.update(
            MONAI_LABEL_DICOMWEB_CACHE_PATH=str(self.cache_dir),
            MONAI_LABEL_SESSION_PATH=str(self.root / "sessions"),
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            TOKENIZERS_PARALLELISM="false",
            PYTHONDONTWRITEBYTECODE="1",
        )
        env.pop("PYTHONPATH", None)
        return env

    def launch(self) -> "LabelServer":
        """Start the process without waiting for it to answer."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        log = open(self.log_file, "ab")
        self.t0 = time.perf_counter()
        self.process = subprocess.Popen(
            self.command(),
            cwd=self.root,
            env=self.environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        return self

    def wait_ready(self) -> "LabelServer":
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"monailabel exited with code {self.process and self.process.returncode}:\n{self.log_tail()}")
            try:
                if requests.get(f"{self.url}/info/", timeout=5).status_code == 200:
                    self.started_seconds = time.perf_counter() - self.t0
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.25)
        raise RuntimeError(f"monailabel did not answer within {self.start_timeout:.0f} s:\n{self.log_tail()}")

    def start(self) -> "LabelServer":
        return self.launch().wait_ready()

    def wait_exit(self, timeout: float) -> int:
        """For a server that must fail at start: its exit code (it is killed if still running after ``timeout``)."""
        assert self.process is not None
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise

    def stop(self, grace: float = 30.0) -> int | None:
        """SIGTERM (uvicorn shuts down gracefully), SIGKILL to the whole session after ``grace`` seconds."""
        proc = self.process
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=grace)
        return proc.returncode

    def session_alive(self) -> bool:
        """Whether any process of the server's session (its process group) is still there."""
        if self.process is None:
            return False
        try:
            os.killpg(self.process.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def log_tail(self, n: int = 6000) -> str:
        return self.log_file.read_text(errors="replace")[-n:] if self.log_file.exists() else ""

    def __enter__(self) -> "LabelServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
