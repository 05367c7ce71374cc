"""Typed exceptions of monai-medunic.

Every error raised on bad input derives from :class:`MedUniCError`. Errors about a file carry the
file path and, where known, the line (manifests, corpora) and the field (DICOM attribute, column,
config key), so that a user can find the problem without reading a traceback. Messages never carry
patient identifiers: callers pass attribute *names* (``PatientID``), never their values.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = [
    "MedUniCError",
    "ConfigurationError",
    "ShapeMismatchError",
    "BatchSizeError",
    "DataError",
    "DicomReadError",
    "MissingDecoderError",
    "NotAnImageError",
    "ReportTextError",
    "ManifestError",
    "CorpusError",
    "VocabularyError",
    "ModelLoadError",
    "CheckpointError",
    "EncoderWeightsError",
    "NonFiniteLossError",
    "OutputWriteError",
    "TranslationMissingError",
    "MetricInputError",
    "VolumeReadError",
    "UnknownAnswerError",
    "MissingOutputError",
]


class MedUniCError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigurationError(MedUniCError, ValueError):
    """An argument or a config value is invalid (names the key and the allowed values)."""


class ShapeMismatchError(MedUniCError, ValueError):
    """Two tensors that must agree in shape do not; the message names both shapes."""

    def __init__(self, what: str, shape_a: Any, shape_b: Any, hint: str = "") -> None:
        self.shape_a = tuple(shape_a)
        self.shape_b = tuple(shape_b)
        msg = f"{what}: shapes {self.shape_a} and {self.shape_b} do not match"
        super().__init__(f"{msg}; {hint}" if hint else msg)


class BatchSizeError(MedUniCError, ValueError):
    """A loss that needs batch statistics got too small a batch."""


class DataError(MedUniCError):
    """Bad input data. Carries ``path``, ``line`` (1-based, if any) and ``field`` (if any)."""

    def __init__(
        self,
        message: str,
        path: str | os.PathLike | None = None,
        field: str | None = None,
        line: int | None = None,
    ) -> None:
        self.path = os.fspath(path) if path is not None else None
        self.field = field
        self.line = line
        self.reason = message
        where = []
        if self.path is not None:
            where.append(self.path)
        if line is not None:
            where.append(f"line {line}")
        if field is not None:
            where.append(f"field '{field}'")
        super().__init__(f"{': '.join(where)}: {message}" if where else message)


class DicomReadError(DataError):
    """A DICOM file cannot be read or decoded (truncated, not DICOM, no PixelData, ...)."""


class MissingDecoderError(DicomReadError):
    """The transfer syntax needs a pixel decoder package that is not installed (message names it)."""


class NotAnImageError(DicomReadError):
    """A DICOM object that is not an image (e.g. an SR) was given where an image is expected."""


class ReportTextError(DataError):
    """A report (e.g. a DICOM SR) holds no usable text."""


class ManifestError(DataError):
    """A dataset manifest or one of its records is invalid."""


class CorpusError(DataError):
    """A text corpus is empty, unreadable, not UTF-8, or lacks the named column."""


class VocabularyError(MedUniCError):
    """A tokenizer or vocabulary cannot be extended (e.g. it has no WordPiece vocabulary)."""


class UnknownAnswerError(DataError):
    """A VQA answer is not in the answer list; ``answer`` holds it (answers are finding words, not PHI)."""

    def __init__(self, answer: str, known: int, path: str | os.PathLike | None = None, field: str | None = "answer",
                 line: int | None = None) -> None:
        self.answer = answer
        super().__init__(
            f"answer '{answer}' is not in the answer list ({known} answers); add it to the vocabulary, map it "
            "with an alias, or drop the question", path=path, field=field, line=line,
        )


class ModelLoadError(MedUniCError):
    """A model, tokenizer, bundle or checkpoint cannot be loaded from the given path."""


class CheckpointError(ModelLoadError):
    """A training checkpoint cannot be read or restored (truncated, refused, or from another architecture)."""


class EncoderWeightsError(ModelLoadError):
    """Pre-trained encoder weights do not fit the encoder they are loaded into (another architecture).

    ``missing``: the encoder's parameter / buffer names the checkpoint lacks; ``unexpected``: the
    checkpoint's names the encoder does not have; ``mismatched``: ``name: (checkpoint shape, encoder shape)``.
    """

    def __init__(self, message: str, missing=(), unexpected=(), mismatched=None) -> None:
        self.missing = list(missing)
        self.unexpected = list(unexpected)
        self.mismatched = dict(mismatched or {})
        super().__init__(message)


class MissingOutputError(ConfigurationError):
    """An objective term reads a tensor that neither the network can produce (with the inputs it is
    given) nor the batch holds: e.g. fused MLM on a network without a fusion module. ``term`` and
    ``key`` name them; ``available`` lists what the network and the batch offer."""

    def __init__(self, term: str, key: str, available: Any = (), hint: str = "") -> None:
        self.term, self.key, self.available = term, key, sorted(available)
        msg = (f"objective term '{term}' reads '{key}', which the network cannot produce with its inputs and the batch "
               f"does not hold (available: {self.available})")
        super().__init__(f"{msg}; {hint}" if hint else msg)


class OutputWriteError(MedUniCError, OSError):
    """An output (checkpoint, DICOM SR, vocabulary, report) cannot be written: the disk is full, over its
    quota or read-only. ``path`` names what was being written; the writers leave earlier files as they
    were (they write a temporary file and rename it only when it is complete)."""

    def __init__(self, message: str, path: str | os.PathLike | None = None, errno: int | None = None) -> None:
        self.path = os.fspath(path) if path is not None else None
        self.reason = message
        super().__init__(f"{self.path}: {message}" if self.path is not None else message)
        self.errno = errno


class NonFiniteLossError(MedUniCError, FloatingPointError):
    """A loss term became NaN or infinite; ``term`` names it."""

    def __init__(self, term: str, value: float, iteration: int | None = None) -> None:
        self.term = term
        self.value = value
        self.iteration = iteration
        at = f" at iteration {iteration}" if iteration is not None else ""
        super().__init__(
            f"loss term '{term}' is {value}{at}; lower the learning rate, check the inputs, "
            "or train in fp32 (precision='fp32')"
        )


class TranslationMissingError(MedUniCError, KeyError):
    """A finding has no name in the requested prompt language."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class MetricInputError(MedUniCError, ValueError):
    """A metric got inputs it cannot be computed from (e.g. labels are missing)."""


class VolumeReadError(DataError):
    """A 3D volume (DICOM series or NIfTI file) cannot be read or assembled."""


def medunic_error_in(exc: BaseException | None) -> MedUniCError | None:
    """The first :class:`MedUniCError` in ``exc``'s chain (itself, its ``__cause__`` or ``__context__``)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, MedUniCError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def install_excepthook() -> None:
    """Make this package's one-line error the last thing printed when a program dies of it.

    ``python -m monai.bundle run`` reports a config error as MONAI's generic ``RuntimeError: Failed to
    instantiate component ...`` at the end of a long traceback, with our message (the file, the field,
    the fix) in the middle. The hook prints the usual traceback, then our message once more as the
    last line. Other exceptions are untouched. Installed once, when :mod:`monai_medunic` is imported.
    """
    import sys

    previous = sys.excepthook
    if getattr(previous, "_medunic", False):
        return

    def hook(exc_type, exc, tb):  # type: ignore[no-untyped-def]
        previous(exc_type, exc, tb)
        ours = medunic_error_in(exc)
        if ours is not None and ours is not exc:
            sys.stderr.write(f"\nmonai-medunic: {type(ours).__name__}: {ours}\n")

    hook._medunic = True  # type: ignore[attr-defined]
    sys.excepthook = hook
