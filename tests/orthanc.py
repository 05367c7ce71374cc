"""A private Orthanc PACS (Debian ``orthanc`` + ``orthanc-dicomweb``) for tests and benchmarks.

:class:`OrthancServer` writes its own JSON configuration into a temporary folder (storage, index and
temporary directories inside it), picks free loopback ports for HTTP and DICOM, starts
``/usr/sbin/Orthanc`` with the DICOMweb plugin, waits for ``/system`` to answer and, on exit,
stops it with SIGTERM (SIGKILL after a grace period) and checks that the process is gone. A
system-wide Orthanc (``/etc/orthanc``, ``/var/lib/orthanc``) is never used or touched.

Orthanc 1.10 (Debian 12) has no bind-address option (``HttpBindAddresses`` came in 1.12.10): it
listens on every interface. ``RemoteAccessAllowed: false`` makes the HTTP server refuse every client
that is not on the loopback, and the DICOM server accepts no C-STORE / C-FIND / C-GET / C-MOVE from
any modality (none is declared, the ``DicomAlwaysAllow*`` switches are off); only C-ECHO answers.

Used as::

    with OrthancServer(tmp_path) as pacs:
        pacs.store_files([...])            # STOW-RS
        pacs.dicomweb_url                  # http://127.0.0.1:<port>/dicom-web
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterable, Sequence

import requests

ORTHANC = os.environ.get("MEDUNIC_ORTHANC", "/usr/sbin/Orthanc")
DICOMWEB_PLUGIN = os.environ.get("MEDUNIC_ORTHANC_DICOMWEB", "/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that is free on ``host`` right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def orthanc_config(root: Path, http_port: int, dicom_port: int, name: str = "medunic-test-pacs") -> dict:
    """The configuration of a private, loopback-only Orthanc whose files all live under ``root``."""
    return {
        "Name": name,
        "StorageDirectory": str(root / "storage"),
        "IndexDirectory": str(root / "storage"),
        "TemporaryDirectory": str(root / "tmp"),
        "StorageCompression": False,
        "Plugins": [DICOMWEB_PLUGIN],
        "HttpServerEnabled": True,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "OrthancExplorerEnabled": False,
        "WebDavEnabled": False,
        "HttpThreadsCount": 8,
        "HttpTimeout": 30,
        "KeepAlive": True,
        "DicomServerEnabled": True,
        "DicomAet": "MEDUNICPACS",
        "DicomPort": dicom_port,
        "DicomModalities": {},
        "DicomAlwaysAllowEcho": True,
        "DicomAlwaysAllowStore": False,
        "DicomAlwaysAllowFind": False,
        "DicomAlwaysAllowFindWorklist": False,
        "DicomAlwaysAllowGet": False,
        "DicomAlwaysAllowMove": False,
        "UnknownSopClassAccepted": False,
        "SaveJobs": False,
        "ConcurrentJobs": 1,
        "StableAge": 2,
        "ExecuteLuaEnabled": False,
        "RestApiWriteToFileSystemEnabled": False,
        "DeidentifyLogs": True,
        "DicomWeb": {
            "Enable": True,
            "Root": "/dicom-web/",
            "EnableWado": False,
            "Host": f"{LOOPBACK}:{http_port}",
            "Ssl": False,
            "StudiesMetadata": "Full",
            "SeriesMetadata": "Full",
        },
    }


class OrthancServer:
    """A private Orthanc on free loopback ports, as a context manager (see the module docstring).

    Args:
        root: a fresh folder for the configuration, the storage and the log.
        start_timeout: seconds to wait for the REST API to answer.
    """

    def __init__(self, root: str | os.PathLike, start_timeout: float = 60.0) -> None:
        self.root = Path(root)
        self.start_timeout = float(start_timeout)
        self.http_port = 0
        self.dicom_port = 0
        self.process: subprocess.Popen | None = None
        self.last_pid: int | None = None
        self.log_file = self.root / "orthanc.log"

    # ------------------------------------------------------------------------------- lifecycle

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        """The DICOMweb root (QIDO-RS / WADO-RS / STOW-RS), as given to ``monailabel --studies``."""
        return f"{self.url}/dicom-web"

    def start(self) -> "OrthancServer":
        for exe in (ORTHANC, DICOMWEB_PLUGIN):
            if not Path(exe).exists():
                raise RuntimeError(f"{exe} is missing: run scripts/ensure_system_tools.sh (Debian orthanc, orthanc-dicomweb)")
        (self.root / "storage").mkdir(parents=True, exist_ok=True)
        (self.root / "tmp").mkdir(exist_ok=True)
        last_error = ""
        for _ in range(3):  # a port picked free can be taken by someone else before Orthanc binds it
            self.http_port, self.dicom_port = free_port(), free_port()
            while self.dicom_port == self.http_port:
                self.dicom_port = free_port()
            config = self.root / "orthanc.json"
            config.write_text(json.dumps(orthanc_config(self.root, self.http_port, self.dicom_port), indent=2))
            log = open(self.log_file, "ab")
            self.process = subprocess.Popen(
                [ORTHANC, "--no-jobs", str(config)],
                cwd=self.root,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            log.close()
            try:
                self._wait_ready()
                return self
            except RuntimeError as err:
                last_error = str(err)
                self.stop()
        raise RuntimeError(f"Orthanc did not start: {last_error}\n{self.log_tail()}")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited with code {self.process.returncode if self.process else '?'}")
            try:
                reply = requests.get(f"{self.url}/system", timeout=2)
                if reply.ok and reply.json().get("Name") == "medunic-test-pacs":
                    plugins = requests.get(f"{self.url}/plugins", timeout=2).json()
                    if "dicom-web" not in plugins:
                        raise RuntimeError(f"the DICOMweb plugin is not loaded (plugins: {plugins})")
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"no answer on {self.url}/system within {self.start_timeout:.0f} s")

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; returns once the process has been reaped."""
        proc, self.process = self.process, None
        if proc is None:
            return
        self.last_pid = proc.pid
        if proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=grace)

    def session_alive(self) -> bool:
        """Whether any process of the last started Orthanc's session (its process group) is still there."""
        pid = self.process.pid if self.process is not None else self.last_pid
        if pid is None:
            return False
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def __enter__(self) -> "OrthancServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def log_tail(self, n: int = 4000) -> str:
        return self.log_file.read_text(errors="replace")[-n:] if self.log_file.exists() else ""

    # ------------------------------------------------------------------------------ DICOMweb

    def store_files(self, files: Iterable[str | os.PathLike]) -> list[str]:
        """STOW-RS the DICOM files (one request); returns the retrieve URLs Orthanc reports."""
        from dicomweb_client.api import DICOMwebClient
        from pydicom import dcmread

        client = DICOMwebClient(url=self.dicomweb_url)
        datasets = [dcmread(f) for f in files]
        response = client.store_instances(datasets)
        failed = response.get("FailedSOPSequence")
        if failed:
            raise RuntimeError(f"STOW-RS refused {len(failed.value)} instance(s)")
        return [str(item.RetrieveURL) for item in response.ReferencedSOPSequence]

    def series(self) -> list[dict]:
        """QIDO-RS of every series (the DICOM JSON model)."""
        reply = requests.get(f"{self.dicomweb_url}/series", timeout=30)
        reply.raise_for_status()
        return reply.json() if reply.content else []

    def instance_count(self) -> int:
        return int(requests.get(f"{self.url}/statistics", timeout=30).json()["CountInstances"])


def dicom_files(folder: str | os.PathLike, patterns: Sequence[str] = ("*.dcm",)) -> list[Path]:
    """The DICOM files under ``folder`` (recursively), sorted."""
    root = Path(folder)
    return sorted({p for pat in patterns for p in root.rglob(pat) if p.is_file()})


def clean_copy(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Copy one file (the test data must not be modified in place)."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, dst)
    return dst
