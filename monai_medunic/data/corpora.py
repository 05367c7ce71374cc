"""Report text corpora with a language tag: generic CSV / JSONL / text files and the real IU X-ray and PadChest reports.

Med-UniC (Sec. 3.2 and Sec. 4 "Dataset") post-pre-trains its text encoder on a randomly mixed corpus of
English and Spanish radiology reports. Following the paper, every corpus here

* concatenates the findings and impression sections of a report (IU X-ray), and
* drops reports of fewer than three tokens (whitespace-separated words), counting what was dropped.

Every corpus yields :class:`ReportRecord` objects and keeps a :class:`CorpusStats` with the number of
reports read, kept and dropped per reason; the counts are logged when a corpus is loaded, so no report
is dropped silently.

Real corpora. The ``torchxrayvision`` wheel ships two report files as package data, which this module
reads in place (it never imports ``torchxrayvision`` and nothing is copied):

* ``data/NLMCXR_reports.tgz``: the Indiana University chest X-ray collection (Demner-Fushman et al.,
  2016), 3,955 English reports as XML; :class:`IUXRayCorpus` reads FINDINGS + IMPRESSION.
* ``data/PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz``: PadChest (Bustos et al., 2020),
  one row per image, Spanish reports. **The PadChest report text is stemmed in the source** (e.g.
  ``"sin hallazg patolog edad pacient"``): it is not fluent Spanish, which matters when reading
  vocabulary or fertility figures computed on it. :class:`PadChestCorpus` keeps one record per
  ``ReportID`` (a report shared by a PA and a lateral image is counted once, as ``duplicate_report``).

Bad input raises :class:`monai_medunic.errors.CorpusError` naming the file (and the line or the
column): an empty corpus, a missing column or key, invalid JSON, or text that is not UTF-8. An unknown
language tag raises :class:`monai_medunic.errors.ConfigurationError`.

Patient identifiers are never read into records or logged: PadChest's ``PatientID`` and
``PatientBirth`` columns are ignored.
"""

from __future__ import annotations

import abc
import csv
import gzip
import importlib.util
import io
import json
import logging
import os
import random
import re
import tarfile
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from monai_medunic.errors import ConfigurationError, CorpusError
from monai_medunic.text.languages import validate_language_code
from monai_medunic.text.quality import MAX_REPORT_CHARS, clean_report_text, report_text_problem

__all__ = [
    "ReportRecord",
    "CorpusStats",
    "ReportCorpus",
    "InMemoryCorpus",
    "TextFileCorpus",
    "CSVCorpus",
    "JSONLCorpus",
    "IUXRayCorpus",
    "PadChestCorpus",
    "torchxrayvision_data_dir",
    "IU_XRAY_REPORTS_FILE",
    "PADCHEST_REPORTS_FILE",
    "load_report_records",
    "count_words",
]

logger = logging.getLogger(__name__)

IU_XRAY_REPORTS_FILE = "NLMCXR_reports.tgz"
PADCHEST_REPORTS_FILE = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz"

_WS_RE = re.compile(r"\s+")
# csv rows of PadChest are long; allow large fields
csv.field_size_limit(16 * 1024 * 1024)


def count_words(text: str) -> int:
    """Number of whitespace-separated tokens: the unit of the paper's "fewer than three tokens" filter."""
    return len(text.split())


def _clean(text: str) -> str:
    return _WS_RE.sub(" ", clean_report_text(text)[0]).strip()


@dataclass(frozen=True)
class ReportRecord:
    """One report: its text, language tag, a report id (unique within its source) and the source name."""

    text: str
    language: str
    report_id: str
    source: str

    def to_dict(self) -> dict[str, str]:
        """The record as the dictionary the MONAI datasets of this package use (``report``, ``language``, ...)."""
        return {"report": self.text, "language": self.language, "report_id": self.report_id, "source": self.source}


@dataclass
class CorpusStats:
    """How many reports a corpus read, kept, and dropped per reason (``empty``, ``too_short``, ...)."""

    source: str
    language: str
    read: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "language": self.language,
            "read": self.read,
            "kept": self.kept,
            "dropped": dict(sorted(self.dropped.items())),
        }

    def summary(self) -> str:
        drops = ", ".join(f"{k}={v}" for k, v in sorted(self.dropped.items())) or "none"
        return f"{self.source} [{self.language}]: read {self.read}, kept {self.kept}, dropped: {drops}"


class ReportCorpus(abc.ABC):
    """Base class of the corpora: turns raw ``(report_id, text, line)`` items into filtered :class:`ReportRecord`.

    Args:
        language: ISO 639 code of the reports (validated against spaCy's languages).
        min_tokens: reports with fewer whitespace tokens are dropped (Med-UniC: 3).
        limit: stop after this many kept reports (a slice for tests and demos); ``None`` reads everything.
        name: the source name used in records, stats and messages (defaults to the file name).

    Subclasses implement :meth:`_iter_raw`. :meth:`load` returns the records and fills :attr:`stats`.
    """

    def __init__(self, language: str, min_tokens: int = 3, limit: int | None = None, name: str | None = None) -> None:
        self.language = validate_language_code(language, what=f"corpus {name or self.describe()}")
        if min_tokens < 0:
            raise ConfigurationError(f"min_tokens must be >= 0, got {min_tokens}")
        if limit is not None and limit < 1:
            raise ConfigurationError(f"limit must be a positive number of reports or None, got {limit}")
        self.min_tokens = int(min_tokens)
        self.limit = limit
        self.name = name or self.describe()
        self.stats = CorpusStats(source=self.name, language=self.language)

    def describe(self) -> str:
        """A short human-readable name of the corpus source (a file path for file corpora)."""
        return getattr(self, "path", None) or type(self).__name__

    @abc.abstractmethod
    def _iter_raw(self) -> Iterator[tuple[str, str | None, int | None]]:
        """Yield ``(report_id, text or None, line number or None)`` for every report in the source."""

    def _skip(self, reason: str) -> None:
        """Count a source item that is read but not used (e.g. a duplicate) under ``reason``."""
        self.stats.read += 1
        self.stats.dropped[reason] += 1

    def _drop_reason(self, text: str | None) -> str | None:
        """``empty``, ``too_short`` (fewer than ``min_tokens``), or a text problem of
        :func:`~monai_medunic.text.quality.report_text_problem`: ``binary_report``, ``long_report``
        (more than :data:`~monai_medunic.text.quality.MAX_REPORT_CHARS`), ``script_mismatch``."""
        if text is None or not clean_report_text(text)[0].strip():
            return "empty"
        if count_words(text) < self.min_tokens:
            return "too_short"
        problem = report_text_problem(text, self.language, MAX_REPORT_CHARS)
        return problem[0] if problem is not None else None

    def __iter__(self) -> Iterator[ReportRecord]:
        return iter(self.load())

    def load(self) -> list[ReportRecord]:
        """Read the source and return the kept records; raise :class:`CorpusError` if none is left."""
        self.stats = CorpusStats(source=self.name, language=self.language)
        records: list[ReportRecord] = []
        for report_id, text, _line in self._iter_raw():
            self.stats.read += 1
            reason = self._drop_reason(text)
            if reason is not None:
                self.stats.dropped[reason] += 1
                continue
            records.append(ReportRecord(_clean(text or ""), self.language, str(report_id), self.name))
            self.stats.kept += 1
            if self.limit is not None and len(records) >= self.limit:
                break
        logger.info("corpus %s", self.stats.summary())
        if not records:
            reason = "it holds no report" if self.stats.read == 0 else (
                f"all {self.stats.read} reports were dropped ({dict(self.stats.dropped)}; "
                f"reports need at least {self.min_tokens} tokens)"
            )
            raise CorpusError(f"empty corpus: {reason}", path=self.describe())
        return records

    def texts(self) -> list[str]:
        """Only the report texts of :meth:`load`."""
        return [r.text for r in self.load()]


class InMemoryCorpus(ReportCorpus):
    """A corpus from a list of strings (e.g. the synthetic demo reports), with the same filtering and stats."""

    def __init__(self, texts: Iterable[str], language: str, min_tokens: int = 3, limit: int | None = None,
                 name: str = "memory") -> None:
        self._texts = list(texts)
        super().__init__(language=language, min_tokens=min_tokens, limit=limit, name=name)

    def describe(self) -> str:
        return getattr(self, "name", None) or "memory"

    def _iter_raw(self) -> Iterator[tuple[str, str | None, int | None]]:
        for i, t in enumerate(self._texts):
            if t is not None and not isinstance(t, str):
                raise CorpusError(f"item {i} is a {type(t).__name__}, not a string", path=self.describe())
            yield str(i), t, None


class _FileCorpus(ReportCorpus):
    """A corpus read from one file (optionally gzip-compressed, by the ``.gz`` suffix)."""

    def __init__(self, path: str | os.PathLike, language: str, min_tokens: int = 3, limit: int | None = None,
                 name: str | None = None) -> None:
        self.path = os.fspath(path)
        super().__init__(language=language, min_tokens=min_tokens, limit=limit, name=name or os.path.basename(self.path))
        if not os.path.isfile(self.path):
            raise CorpusError("file not found", path=self.path)

    def describe(self) -> str:
        return self.path

    def _open_binary(self) -> io.BufferedIOBase:
        try:
            return gzip.open(self.path, "rb") if self.path.endswith(".gz") else open(self.path, "rb")  # noqa: SIM115
        except OSError as err:
            raise CorpusError(f"cannot open: {err.strerror or err}", path=self.path) from err

    def _iter_lines(self) -> Iterator[tuple[int, str]]:
        """Decoded lines (1-based numbers), strict UTF-8 (a BOM is accepted)."""
        with self._open_binary() as f:
            try:
                for lineno, raw in enumerate(f, 1):
                    try:
                        line = raw.decode("utf-8")
                    except UnicodeDecodeError as err:
                        raise CorpusError(
                            f"not UTF-8 text (byte 0x{raw[err.start]:02x} at column {err.start + 1}); "
                            "re-encode the file as UTF-8",
                            path=self.path,
                            line=lineno,
                        ) from err
                    if lineno == 1:
                        line = line.lstrip("\ufeff")
                    yield lineno, line
            except (OSError, EOFError, gzip.BadGzipFile) as err:
                raise CorpusError(f"cannot read: {err}", path=self.path) from err


class TextFileCorpus(_FileCorpus):
    """A plain text file with one report per line (blank lines are counted as ``empty``)."""

    def _iter_raw(self) -> Iterator[tuple[str, str | None, int | None]]:
        for lineno, line in self._iter_lines():
            yield f"line{lineno}", line.strip(), lineno


class JSONLCorpus(_FileCorpus):
    """A JSON-lines file with one object per report.

    Args:
        path: the ``.jsonl`` (or ``.jsonl.gz``) file.
        language: language tag of the reports.
        text_key: key of the report text (a string), or a list of keys whose values are concatenated
            (e.g. ``["findings", "impression"]``; missing or null parts are skipped).
        id_key: key of a report id (defaults to the line number).
        language_key: if given, records whose value for this key differs from ``language`` are skipped
            and counted as ``other_language`` (useful for a bilingual manifest).
    """

    def __init__(self, path: str | os.PathLike, language: str, text_key: str | Sequence[str] = "report",
                 id_key: str | None = None, language_key: str | None = None, min_tokens: int = 3,
                 limit: int | None = None, name: str | None = None) -> None:
        super().__init__(path, language, min_tokens=min_tokens, limit=limit, name=name)
        self.text_keys = [text_key] if isinstance(text_key, str) else list(text_key)
        if not self.text_keys:
            raise ConfigurationError("text_key must name at least one key")
        self.id_key = id_key
        self.language_key = language_key

    def _iter_raw(self) -> Iterator[tuple[str, str | None, int | None]]:
        for lineno, line in self._iter_lines():
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise CorpusError(f"invalid JSON: {err.msg}", path=self.path, line=lineno) from err
            if not isinstance(obj, dict):
                raise CorpusError(f"each line must be a JSON object, got {type(obj).__name__}", path=self.path,
                                  line=lineno)
            present = [k for k in self.text_keys if k in obj]
            if not present:
                raise CorpusError(
                    f"no text key {self.text_keys} in the record (keys: {sorted(obj)[:20]})",
                    path=self.path, line=lineno, field=self.text_keys[0],
                )
            if self.language_key is not None:
                rec_lang = obj.get(self.language_key)
                if rec_lang is None:
                    raise CorpusError("record has no language tag", path=self.path, line=lineno,
                                      field=self.language_key)
                if validate_language_code(rec_lang, what=f"{self.path}: line {lineno}") != self.language:
                    self._skip("other_language")
                    continue
            parts = []
            for k in self.text_keys:
                v = obj.get(k)
                if v is None:
                    continue
                if not isinstance(v, str):
                    raise CorpusError(f"text must be a string, got {type(v).__name__}", path=self.path,
                                      line=lineno, field=k)
                parts.append(v)
            rid = str(obj.get(self.id_key, lineno)) if self.id_key else str(lineno)
            yield rid, " ".join(parts), lineno


class CSVCorpus(_FileCorpus):
    """A CSV file (optionally ``.csv.gz``) with a header row.

    Args:
        path: the CSV file.
        language: language tag of the reports.
        text_column: column of the report text, or a list of columns to concatenate (e.g. findings, impression).
        id_column: column of a report id (defaults to the row number).
        dedupe_column: keep only the first row of each value of this column (others are counted as
            ``duplicate_report``), e.g. ``ReportID`` when a report is repeated for every image.
        delimiter: the CSV delimiter.
    """

    def __init__(self, path: str | os.PathLike, language: str, text_column: str | Sequence[str] = "report",
                 id_column: str | None = None, dedupe_column: str | None = None, delimiter: str = ",",
                 min_tokens: int = 3, limit: int | None = None, name: str | None = None) -> None:
        super().__init__(path, language, min_tokens=min_tokens, limit=limit, name=name)
        self.text_columns = [text_column] if isinstance(text_column, str) else list(text_column)
        if not self.text_columns:
            raise ConfigurationError("text_column must name at least one column")
        self.id_column = id_column
        self.dedupe_column = dedupe_column
        self.delimiter = delimiter

    def _rows(self) -> Iterator[tuple[int, dict[str, str]]]:
        with self._open_binary() as fb:
            text = io.TextIOWrapper(fb, encoding="utf-8-sig", errors="strict", newline="")
            reader = csv.DictReader(text, delimiter=self.delimiter)
            try:
                header = reader.fieldnames
                if not header:
                    raise CorpusError("empty corpus: the file has no header row", path=self.path)
                for col in [*self.text_columns, self.id_column, self.dedupe_column]:
                    if col is not None and col not in header:
                        raise CorpusError(
                            f"no column '{col}' (columns: {[h for h in header if h][:40]})", path=self.path, field=col
                        )
                for row in reader:
                    yield reader.line_num, row
            except UnicodeDecodeError as err:
                raise CorpusError(
                    "not UTF-8 text; re-encode the file as UTF-8", path=self.path, line=reader.line_num + 1
                ) from err
            except csv.Error as err:
                raise CorpusError(f"malformed CSV: {err}", path=self.path, line=reader.line_num) from err
            except (OSError, EOFError) as err:
                raise CorpusError(f"cannot read: {err}", path=self.path) from err

    def _iter_raw(self) -> Iterator[tuple[str, str | None, int | None]]:
        seen: set[str] = set()
        for line, row in self._rows():
            if self.dedupe_column is not None:
                key = row.get(self.dedupe_column) or ""
                if key in seen:
                    self._skip("duplicate_report")
                    continue
                seen.add(key)
            parts = [row.get(c) or "" for c in self.text_columns]
            text = " ".join(p for p in parts if p and p.strip().lower() not in ("nan", "none"))
            rid = row.get(self.id_column) if self.id_column else None
            yield (rid or f"row{line}"), text, line


def torchxrayvision_data_dir() -> str:
    """The ``data`` directory of the installed ``torchxrayvision`` wheel, found without importing the package.

    Raises:
        CorpusError: the package is not installed (``pip install --no-deps torchxrayvision``).
    """
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or not spec.submodule_search_locations:
        raise CorpusError(
            "the real report corpora ship inside the torchxrayvision wheel, which is not installed; "
            "run `pip install --no-deps torchxrayvision`",
            path="torchxrayvision/data",
        )
    return os.path.join(list(spec.submodule_search_locations)[0], "data")


def _default_data_file(name: str, path: str | os.PathLike | None = None) -> str:
    """``path`` if it is a file; ``path/name`` if it is a directory; else the file in the torchxrayvision wheel."""
    if path is not None and not os.path.isdir(path):
        return os.fspath(path)
    path = os.path.join(os.fspath(path) if path is not None else torchxrayvision_data_dir(), name)
    if not os.path.isfile(path):
        raise CorpusError("file not found in the torchxrayvision wheel (version without the data files?)", path=path)
    return path


class IUXRayCorpus(_FileCorpus):
    """The Indiana University chest X-ray reports (``NLMCXR_reports.tgz``, XML per report), in English.

    The text of a report is FINDINGS followed by IMPRESSION (Med-UniC Sec. 4: "findings and impression");
    reports where both are absent are counted as ``empty``, reports of fewer than ``min_tokens`` words as
    ``too_short``. De-identification placeholders (``XXXX``) are kept as they are in the source.

    Args:
        path: the ``.tgz`` file, or a directory holding ``NLMCXR_reports.tgz``; defaults to the copy inside
            the installed ``torchxrayvision`` wheel.
        sections: the ``AbstractText`` labels to concatenate, in order.
    """

    def __init__(self, path: str | os.PathLike | None = None, language: str = "en",
                 sections: Sequence[str] = ("FINDINGS", "IMPRESSION"), min_tokens: int = 3,
                 limit: int | None = None, name: str = "iu_xray") -> None:
        super().__init__(_default_data_file(IU_XRAY_REPORTS_FILE, path), language, min_tokens=min_tokens,
                         limit=limit, name=name)
        self.sections = tuple(sections)

    def _iter_raw(self) -> Iterator[tuple[str, str | None, int | None]]:
        try:
            with tarfile.open(self.path, "r:gz") as tar:
                members = [m for m in tar.getmembers() if m.isfile() and m.name.endswith(".xml")]
                members.sort(key=lambda m: (len(m.name), m.name))  # numeric order of '<n>.xml'
                for m in members:
                    f = tar.extractfile(m)
                    if f is None:
                        continue
                    data = f.read()
                    try:
                        root = ET.fromstring(data)
                    except ET.ParseError as err:
                        raise CorpusError(f"member {m.name}: invalid XML ({err})", path=self.path) from err
                    texts = {el.get("Label"): (el.text or "") for el in root.iter("AbstractText")}
                    parts = [texts.get(s, "").strip() for s in self.sections]
                    rid = os.path.splitext(os.path.basename(m.name))[0]
                    yield rid, " ".join(p for p in parts if p), None
        except (tarfile.TarError, OSError, EOFError) as err:
            raise CorpusError(f"cannot read the report archive: {err}", path=self.path) from err


class PadChestCorpus(CSVCorpus):
    """The PadChest reports (``Report`` column), in Spanish; one record per ``ReportID``.

    Note: PadChest's report text is **stemmed** in the source (``"sin hallazg patolog"``), not fluent Spanish.

    Args:
        path: the labels CSV (gz), or a directory holding it; defaults to the copy inside the installed
            ``torchxrayvision`` wheel.
    """

    def __init__(self, path: str | os.PathLike | None = None, language: str = "es", min_tokens: int = 3,
                 limit: int | None = None, name: str = "padchest") -> None:
        super().__init__(_default_data_file(PADCHEST_REPORTS_FILE, path), language, text_column="Report",
                         id_column="ReportID", dedupe_column="ReportID", min_tokens=min_tokens, limit=limit, name=name)


def _as_corpus(spec: ReportCorpus | Mapping[str, Any]) -> ReportCorpus:
    if isinstance(spec, ReportCorpus):
        return spec
    if isinstance(spec, Mapping):
        spec = dict(spec)
        kind = str(spec.pop("type", "")).lower()
        classes = {"csv": CSVCorpus, "jsonl": JSONLCorpus, "text": TextFileCorpus, "iu_xray": IUXRayCorpus,
                   "padchest": PadChestCorpus}
        if kind not in classes:
            raise ConfigurationError(f"corpus spec needs 'type' in {sorted(classes)}, got {kind!r}")
        return classes[kind](**spec)
    raise ConfigurationError(f"expected a ReportCorpus or a dict spec, got {type(spec).__name__}")


def load_report_records(
    corpora: Sequence[ReportCorpus | Mapping[str, Any]], shuffle: bool = True, seed: int = 0
) -> list[dict[str, str]]:
    """Load several corpora and return one (optionally shuffled) list of record dicts.

    This is the mixed English + Spanish pre-training corpus of Med-UniC Sec. 3.2 step (3) ("randomly
    mixed English and Spanish medical reports"). Each corpus' drop counts are logged.

    Args:
        corpora: corpus objects or dict specs such as ``{"type": "jsonl", "path": ..., "language": "es"}``
            (types: ``csv``, ``jsonl``, ``text``, ``iu_xray``, ``padchest``).
        shuffle: shuffle the concatenation (deterministic for a given ``seed``).
        seed: the shuffle seed.

    Returns:
        dicts with keys ``report``, ``language``, ``report_id`` and ``source``.
    """
    if not corpora:
        raise ConfigurationError("load_report_records needs at least one corpus")
    records: list[dict[str, str]] = []
    for spec in corpora:
        corpus = _as_corpus(spec)
        records.extend(r.to_dict() for r in corpus.load())
    if shuffle:
        random.Random(seed).shuffle(records)
    counts = Counter(r["language"] for r in records)
    logger.info("mixed corpus: %d reports (%s)", len(records), ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    return records
