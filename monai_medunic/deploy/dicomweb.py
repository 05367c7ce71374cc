"""The ``cxr_findings`` app's DICOMweb option: read a study from a PACS (WADO-RS), store the SR back (STOW-RS).

A hospital runs the app next to its PACS (Orthanc's DICOMweb plugin, dcm4chee, a cloud DICOM
store): ``--dicomweb URL --study StudyInstanceUID`` retrieves every instance of the study into a
temporary input folder, the app runs on it as on any folder, and each SR it wrote is stored to the
same DICOMweb root, where the study's viewers find it next to the images.

SDK-free (``dicomweb-client`` and pydicom only), so it is tested on its own against a real Orthanc.
Every request is bounded by a timeout; failures raise :class:`~monai_medunic.errors.DataError` naming
the URL (never a patient identifier), which the app reports as a one-line error.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import requests

from monai_medunic.errors import ConfigurationError, DataError

__all__ = [
    "DicomWebTarget",
    "split_dicomweb_args",
    "dicomweb_client",
    "retrieve_study",
    "store_instances",
    "DEFAULT_TIMEOUT",
]

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 60.0
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$")


@dataclass(frozen=True)
class DicomWebTarget:
    """A DICOMweb root and the study to read from it."""

    url: str
    study_uid: str
    timeout: float = DEFAULT_TIMEOUT


def split_dicomweb_args(argv: Sequence[str]) -> tuple[DicomWebTarget | None, list[str]]:
    """Take ``--dicomweb URL``, ``--study UID`` and ``--dicomweb-timeout S`` out of ``argv`` (the SDK's parser rejects them).

    Raises:
        ConfigurationError: one of ``--dicomweb`` / ``--study`` without the other, a URL that is not
            http(s), a study that is not a DICOM UID, or a bad timeout.
    """
    values: dict[str, str] = {}
    rest: list[str] = []
    it = iter(argv)
    for arg in it:
        name = arg.split("=", 1)[0]
        if name in ("--dicomweb", "--study", "--dicomweb-timeout"):
            values[name] = arg.split("=", 1)[1] if "=" in arg else next(it, "")
        else:
            rest.append(arg)
    if not values:
        return None, rest
    url, study = values.get("--dicomweb", "").strip(), values.get("--study", "").strip()
    if not url or not study:
        raise ConfigurationError("--dicomweb URL and --study StudyInstanceUID go together")
    if not url.startswith(("http://", "https://")):
        raise ConfigurationError(f"--dicomweb {url}: must be an http(s) DICOMweb root, e.g. http://host:8042/dicom-web")
    if len(study) > 64 or not _UID.match(study):
        raise ConfigurationError(f"--study {study[:80]!r}: must be a DICOM StudyInstanceUID (digits and dots)")
    try:
        timeout = float(values.get("--dicomweb-timeout", DEFAULT_TIMEOUT))
    except ValueError:
        raise ConfigurationError(f"--dicomweb-timeout {values['--dicomweb-timeout']!r}: must be seconds") from None
    if timeout <= 0:
        raise ConfigurationError("--dicomweb-timeout must be positive")
    return DicomWebTarget(url.rstrip("/"), study, timeout), rest


class _TimeoutSession(requests.Session):
    def __init__(self, timeout: float) -> None:
        super().__init__()
        self.timeout = timeout

    def request(self, method, url, **kwargs):  # type: ignore[override]
        kwargs.setdefault("timeout", self.timeout)
        return super().request(method, url, **kwargs)


def dicomweb_client(url: str, timeout: float = DEFAULT_TIMEOUT):
    """A ``dicomweb_client.DICOMwebClient`` whose requests time out after ``timeout`` seconds and are
    tried twice (the client's default, five tries with exponential back-off, holds a failed run for ~30 s)."""
    from dicomweb_client.api import DICOMwebClient

    client = DICOMwebClient(url=url, session=_TimeoutSession(timeout))
    client.set_http_retry_params(retry=True, max_attempts=2, wait_exponential_multiplier=250)
    return client


def _pacs_error(action: str, url: str, err: Exception) -> DataError:
    if isinstance(err, requests.HTTPError) and err.response is not None:
        return DataError(f"{action}: the PACS answered HTTP {err.response.status_code}", path=url)
    if isinstance(err, requests.Timeout):
        return DataError(f"{action}: the PACS did not answer in time", path=url)
    if isinstance(err, requests.RequestException):
        return DataError(f"{action}: the PACS cannot be reached ({type(err).__name__})", path=url)
    return DataError(f"{action}: {type(err).__name__}: {err}", path=url)


def retrieve_study(target: DicomWebTarget, folder: str | os.PathLike) -> list[Path]:
    """WADO-RS every instance of ``target.study_uid`` into ``folder/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``.

    Raises:
        DataError: the PACS fails, does not answer, or holds no instance of the study.
    """
    client = dicomweb_client(target.url, target.timeout)
    root = Path(folder)
    action = f"retrieving study {target.study_uid}"
    try:
        # the stored transfer syntax: the default (Explicit VR Little Endian) makes the PACS transcode,
        # which Orthanc cannot do for JPEG 2000 without a codec plugin (HTTP 500)
        instances = client.retrieve_study(target.study_uid, media_types=(("application/dicom", "*"),))
    except requests.HTTPError as err:
        if err.response is not None and err.response.status_code == 404:
            raise DataError(f"{action}: the PACS holds no such study", path=target.url) from None
        raise _pacs_error(action, target.url, err) from None
    except Exception as err:
        raise _pacs_error(action, target.url, err) from None
    files: list[Path] = []
    for ds in instances:
        series, sop = str(ds.get("SeriesInstanceUID", "")), str(ds.get("SOPInstanceUID", ""))
        if not (_UID.match(series) and _UID.match(sop)):
            logger.warning("skipped an instance of study %s without valid Series/SOP Instance UIDs", target.study_uid)
            continue
        path = root / series / f"{sop}.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    if not files:
        raise DataError(f"{action}: the PACS holds no instance of this study", path=target.url)
    logger.info("retrieved %d instance(s) of study %s over WADO-RS", len(files), target.study_uid)
    return files


def store_instances(url: str, files: Iterable[str | os.PathLike], timeout: float = DEFAULT_TIMEOUT) -> list[str]:
    """STOW-RS ``files`` to ``url``; returns the SOP Instance UIDs the PACS accepted.

    Raises:
        DataError: the PACS fails, does not answer, or refuses an instance.
    """
    from pydicom import dcmread

    datasets = [dcmread(f) for f in files]
    if not datasets:
        return []
    client = dicomweb_client(url, timeout)
    try:
        response = client.store_instances(datasets)
    except Exception as err:
        raise _pacs_error(f"storing {len(datasets)} instance(s)", url, err) from None
    failed = response.get("FailedSOPSequence")
    if failed:
        raise DataError(f"STOW-RS: the PACS refused {len(failed.value)} of {len(datasets)} instance(s)", path=url)
    stored = [str(item.ReferencedSOPInstanceUID) for item in response.get("ReferencedSOPSequence", [])]
    logger.info("stored %d instance(s) over STOW-RS", len(stored))
    return stored
