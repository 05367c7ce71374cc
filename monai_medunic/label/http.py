"""Client errors of the MONAI Label server as 4xx answers with a message.

MONAI Label 0.8.5 answers most bad requests with a 500: an unknown task or a failed inference is a
:class:`~monailabel.interfaces.exception.MONAILabelException` that no handler maps, ``params`` that
are not JSON raise in ``json.loads``, and a request without an image is an explicit 500. This module
maps them:

* :func:`check_infer_request`: before a task runs, an unknown task is a 404 (naming the tasks there
  are) and an image id that is neither a DICOM UID nor a file is a 422;
* :func:`to_http_exception`: what a task or the datastore raised, as an ``HTTPException``: a
  malformed id or parameter and an image that is not a usable radiograph are 422, an image the PACS
  does not hold is 404, a PACS that fails or does not answer is 502 / 504; anything else stays a
  500 with the exception type only (never a traceback or a patient identifier);
* :func:`install_error_handlers`: handlers on the FastAPI application for the two errors raised
  before the app is called (``params`` not JSON; no image).

MONAI Label builds its ASGI application before it creates the app (in the lifespan start-up), so
Starlette has already assembled its middleware stack when :func:`install_error_handlers` runs. The
function therefore resets ``middleware_stack``; Starlette rebuilds it, with the new handlers, on the
next request.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from typing import Any, Mapping

import requests
from fastapi import HTTPException
from fastapi.responses import JSONResponse
from monailabel.interfaces.exception import ImageNotFoundException, MONAILabelError, MONAILabelException

from monai_medunic.errors import ConfigurationError, DataError, MedUniCError, TranslationMissingError

from .images import is_dicom_uid

__all__ = ["check_infer_request", "is_uploaded_file", "to_http_exception", "install_error_handlers", "NO_IMAGE_MESSAGE"]

logger = logging.getLogger(__name__)

# MONAI Label's own message when /infer gets neither an image id, nor a file, nor a session
NO_IMAGE_MESSAGE = "Neither Image nor File not Session ID input is provided"


def is_uploaded_file(path: str) -> bool:
    """A file MONAI Label's ``/infer`` wrote from an upload (``tempfile.NamedTemporaryFile`` in the temp folder)."""
    real = os.path.realpath(path)
    return (
        os.path.isfile(real)
        and os.path.dirname(real) == os.path.realpath(tempfile.gettempdir())
        and os.path.basename(real).startswith("tmp")
    )


def check_infer_request(request: Mapping[str, Any], tasks: Mapping[str, Any]) -> None:
    """Raise a 404 for an unknown task and a 422 for an image that is neither a DICOM UID nor an uploaded file.

    MONAI Label reads any existing server path given as the image id; this app does not: a client
    names an image by its SeriesInstanceUID in the PACS, or uploads the file.
    """
    model = request.get("model")
    if not model or model not in tasks:
        raise HTTPException(
            status_code=404,
            detail=f"unknown infer task '{model}'; this app has: {', '.join(sorted(tasks)) or 'none'}",
        )
    image = request.get("image")
    if isinstance(image, str) and not is_dicom_uid(image) and not is_uploaded_file(image):
        raise HTTPException(
            status_code=422,
            detail=f"image id must be a DICOM SeriesInstanceUID held by the PACS, got {image[:80]!r}",
        )


def _pacs_error(err: requests.RequestException) -> HTTPException:
    if isinstance(err, requests.Timeout):
        return HTTPException(status_code=504, detail="the PACS did not answer in time (DICOMweb request timed out)")
    if isinstance(err, requests.HTTPError) and err.response is not None:
        code = err.response.status_code
        if code == 404:
            return HTTPException(status_code=404, detail="the PACS holds no such image (WADO-RS 404)")
        return HTTPException(status_code=502, detail=f"the PACS answered HTTP {code} to a DICOMweb request")
    return HTTPException(status_code=502, detail=f"the PACS cannot be reached ({type(err).__name__})")


def to_http_exception(err: BaseException) -> HTTPException:
    """The ``HTTPException`` for what a task or the datastore raised (see the module docstring)."""
    if isinstance(err, HTTPException):
        return err
    if isinstance(err, ImageNotFoundException):
        return HTTPException(status_code=404, detail=str(err.msg))
    if isinstance(err, MONAILabelException):
        if err.error == MONAILabelError.INVALID_INPUT:
            return HTTPException(status_code=422, detail=str(err.msg))
        logger.error("MONAI Label error %s: %s", err.error, err.msg)
        return HTTPException(status_code=500, detail=f"{err.error.value}: {err.msg}")
    if isinstance(err, DataError):
        field = f" (field '{err.field}')" if err.field else ""
        name = os.path.basename(err.path) if err.path else ""
        where = f"instance file {name}: " if name and not is_dicom_uid(name) else (f"series {name}: " if name else "")
        return HTTPException(status_code=422, detail=f"{where}{err.reason}{field}")
    if isinstance(err, (ConfigurationError, TranslationMissingError)):
        return HTTPException(status_code=422, detail=str(err))
    if isinstance(err, requests.RequestException):
        return _pacs_error(err)
    if isinstance(err, MedUniCError):
        return HTTPException(status_code=500, detail=f"{type(err).__name__}: {err}")
    logger.error("infer failed: %s", type(err).__name__, exc_info=err)
    return HTTPException(status_code=500, detail=f"internal error ({type(err).__name__}); see the server log")


async def _json_error(request, exc: json.JSONDecodeError):
    return JSONResponse(status_code=422, content={"detail": f"params must be a JSON object: {exc.msg} at position {exc.pos}"})


async def _http_error(request, exc: HTTPException):
    if exc.status_code == 500 and exc.detail == NO_IMAGE_MESSAGE:
        return JSONResponse(status_code=422, content={"detail": "no image: give an image id (?image=<SeriesInstanceUID>) or a file"})
    from fastapi.exception_handlers import http_exception_handler

    return await http_exception_handler(request, exc)


def install_error_handlers(fastapi_app: Any | None = None) -> bool:
    """Add the handlers to MONAI Label's FastAPI application (``monailabel.app.app`` when it is loaded).

    Returns ``False`` when there is no server application (the app runs outside ``start_server``).
    """
    if fastapi_app is None:
        module = sys.modules.get("monailabel.app")
        fastapi_app = getattr(module, "app", None)
    if fastapi_app is None:
        return False
    from starlette.exceptions import HTTPException as StarletteHTTPException

    fastapi_app.add_exception_handler(json.JSONDecodeError, _json_error)
    fastapi_app.add_exception_handler(StarletteHTTPException, _http_error)
    fastapi_app.middleware_stack = None  # rebuilt with the handlers on the next request
    return True
