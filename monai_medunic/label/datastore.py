"""A MONAI Label DICOMweb datastore that hands the infer tasks the original DICOM instances.

MONAI Label's :class:`~monailabel.datastore.dicom.DICOMWebDatastore` downloads a series over WADO-RS
and, by default (``MONAI_LABEL_DICOMWEB_CONVERT_TO_NIFTI``), converts it to NIfTI with SimpleITK.
That conversion keeps the stored values and drops what makes them a radiograph: the VOI LUT or
window, the Modality LUT and the MONOCHROME1 polarity that
:class:`~monai_medunic.transforms.dicom.LoadDicomImage` applies. :class:`DicomSeriesDatastore`
therefore never converts: :meth:`~DicomSeriesDatastore.get_image_uri` returns the folder of the
series' Part 10 files, whatever the environment says.

It also:

* refuses an image id that is not a DICOM UID (it becomes a path in the cache) with
  :class:`InvalidImageIdError`, and one the PACS does not hold (QIDO-RS) with
  :class:`ImageNotInPacsError`, before anything is downloaded;
* downloads a series in its stored transfer syntax (no transcoding by the PACS) into a temporary
  folder and renames it into the cache when complete, so an interrupted download is never read;
* bounds every request to the PACS by ``timeout`` seconds and two tries (the DICOMweb client has no
  timeout of its own, and a silent PACS would otherwise hold the request forever);
* does not fetch dcmqi's binaries at start (the base app downloads them from the internet to write
  DICOM SEG; the tasks of this app write no SEG).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from typing import Any

import requests
from monailabel.datastore.dicom import DICOMwebClientX, DICOMWebDatastore
from monailabel.datastore.utils.dicom import dicom_web_download_series
from monailabel.interfaces.exception import ImageNotFoundException, MONAILabelError, MONAILabelException

from .images import is_dicom_uid

__all__ = [
    "DicomSeriesDatastore",
    "InvalidImageIdError",
    "ImageNotInPacsError",
    "TimeoutSession",
    "make_dicomweb_datastore",
    "DEFAULT_SEARCH_FILTER",
]

logger = logging.getLogger(__name__)

# QIDO-RS filter of the series MONAI Label lists (its own default is {"Modality": "CT"}).
DEFAULT_SEARCH_FILTER: dict[str, Any] = {"Modality": "CR"}


class InvalidImageIdError(MONAILabelException):
    """The image id is not a DICOM SeriesInstanceUID."""

    def __init__(self, msg: str) -> None:
        super().__init__(MONAILabelError.INVALID_INPUT, msg)


class ImageNotInPacsError(ImageNotFoundException):
    """The PACS holds no series with this SeriesInstanceUID."""


class TimeoutSession(requests.Session):
    """A :class:`requests.Session` whose requests time out after ``timeout`` seconds unless told otherwise."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self.timeout = float(timeout)

    def request(self, method, url, **kwargs):  # type: ignore[override]
        kwargs.setdefault("timeout", self.timeout)
        return super().request(method, url, **kwargs)


class DicomSeriesDatastore(DICOMWebDatastore):
    """MONAI Label's DICOMweb datastore with the NIfTI conversion off and checked image ids (see the module docstring)."""

    def __init__(self, client, search_filter: dict[str, Any], cache_path: str | None = None, fetch_by_frame: bool = False):
        super().__init__(
            client=client,
            search_filter=search_filter,
            cache_path=cache_path,
            fetch_by_frame=fetch_by_frame,
            convert_to_nifti=False,
        )

    def _study_of(self, image_id: str) -> str:
        found = [
            s
            for s in self._client.search_for_series(search_filters={"SeriesInstanceUID": image_id})
            if s.get("0020000E", {}).get("Value") == [image_id]
        ]
        if not found:
            raise ImageNotInPacsError(f"image '{image_id}': the PACS holds no series with this SeriesInstanceUID")
        study = found[0].get("0020000D", {}).get("Value")
        if not study:
            raise ImageNotInPacsError(f"image '{image_id}': the PACS returned the series without a StudyInstanceUID")
        return str(study[0])

    def _download(self, study_id: str, series_id: str, folder: str) -> None:
        """WADO-RS the series in its stored transfer syntax (``transfer-syntax=*``).

        MONAI Label's download asks for the default (Explicit VR Little Endian), which makes the PACS
        transcode; Orthanc without a JPEG 2000 codec answers 500 for a JPEG 2000 series, and a
        transcoding PACS may change the pixels. The stored bytes are what training read.
        """
        if self._fetch_by_frame:
            dicom_web_download_series(study_id, series_id, folder, self._client, True)
            return
        for ds in self._client.retrieve_series(study_id, series_id, media_types=(("application/dicom", "*"),)):
            sop = str(ds.get("SOPInstanceUID", ""))
            if not is_dicom_uid(sop):
                logger.warning("series %s: skipped an instance without a valid SOPInstanceUID", series_id)
                continue
            ds.save_as(os.path.join(folder, f"{sop}.dcm"))

    def get_image_uri(self, image_id: str) -> str:
        """The folder of the series' original DICOM files (downloaded over WADO-RS once, then cached)."""
        if not is_dicom_uid(image_id):
            raise InvalidImageIdError(
                f"image id must be a DICOM SeriesInstanceUID (digits and dots, at most 64 characters), got {image_id[:80]!r}"
            )
        image_dir = os.path.realpath(os.path.join(self._datastore.image_path(), image_id))
        if os.path.isdir(image_dir) and os.listdir(image_dir):
            return image_dir
        study_id = self._study_of(image_id)
        os.makedirs(os.path.dirname(image_dir), exist_ok=True)
        partial = tempfile.mkdtemp(prefix=f".{image_id}.", dir=os.path.dirname(image_dir))
        try:
            self._download(study_id, image_id, partial)
            if not os.listdir(partial):
                raise ImageNotInPacsError(f"image '{image_id}': the PACS returned no instance for the series")
            if os.path.isdir(image_dir):
                shutil.rmtree(image_dir)
            os.replace(partial, image_dir)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        logger.info("series %s: %d instance(s) cached", image_id, len(os.listdir(image_dir)))
        return image_dir


def make_dicomweb_datastore(url: str, conf: dict[str, str] | None = None) -> DicomSeriesDatastore:
    """The datastore for ``--studies http(s)://.../dicom-web``.

    Settings, from ``--conf`` first, then MONAI Label's environment settings:

    * ``dicomweb_cache`` / ``MONAI_LABEL_DICOMWEB_CACHE_PATH``: where series are cached;
    * ``dicomweb_search_filter`` (JSON) / ``MONAI_LABEL_DICOMWEB_SEARCH_FILTER`` when set to something
      else than MONAI Label's CT default: the QIDO-RS filter of the listed series (default ``{"Modality": "CR"}``);
    * ``dicomweb_timeout``: seconds per PACS request (default 60);
    * ``MONAI_LABEL_DICOMWEB_USERNAME`` / ``_PASSWORD`` and the QIDO / WADO / STOW prefixes.
    """
    from monailabel.config import settings

    conf = dict(conf or {})
    timeout = float(conf.get("dicomweb_timeout", 60))
    session = TimeoutSession(timeout)
    if settings.MONAI_LABEL_DICOMWEB_USERNAME and settings.MONAI_LABEL_DICOMWEB_PASSWORD:
        session.auth = (settings.MONAI_LABEL_DICOMWEB_USERNAME, settings.MONAI_LABEL_DICOMWEB_PASSWORD)
    client = DICOMwebClientX(
        url=url.rstrip("/"),
        session=session,
        qido_url_prefix=settings.MONAI_LABEL_QIDO_PREFIX,
        wado_url_prefix=settings.MONAI_LABEL_WADO_PREFIX,
        stow_url_prefix=settings.MONAI_LABEL_STOW_PREFIX,
    )
    # two tries, not the client's five with exponential back-off (~30 s before an answer)
    client.set_http_retry_params(retry=True, max_attempts=2, wait_exponential_multiplier=250)
    if "dicomweb_search_filter" in conf:
        search_filter = json.loads(conf["dicomweb_search_filter"])
    elif settings.MONAI_LABEL_DICOMWEB_SEARCH_FILTER != {"Modality": "CT"}:
        search_filter = dict(settings.MONAI_LABEL_DICOMWEB_SEARCH_FILTER)
    else:
        search_filter = dict(DEFAULT_SEARCH_FILTER)
    cache = conf.get("dicomweb_cache") or (settings.MONAI_LABEL_DICOMWEB_CACHE_PATH or "").strip() or None
    if settings.MONAI_LABEL_DICOMWEB_CONVERT_TO_NIFTI and os.environ.get("MONAI_LABEL_DICOMWEB_CONVERT_TO_NIFTI"):
        logger.warning(
            "MONAI_LABEL_DICOMWEB_CONVERT_TO_NIFTI is ignored: the tasks read the original DICOM instances "
            "(NIfTI drops the VOI LUT and MONOCHROME1)"
        )
    return DicomSeriesDatastore(
        client=client,
        search_filter=search_filter,
        cache_path=cache,
        fetch_by_frame=settings.MONAI_LABEL_DICOMWEB_FETCH_BY_FRAME,
    )
