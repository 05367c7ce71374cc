"""Report text quality: control characters, binary data, oversize reports, a script that does not fit the language.

Hospital exports reach a pre-training corpus with form feeds and escape sequences from HL7 / OCR,
binary blobs in a text column, whole documents where a report belongs, and reports whose language tag
is wrong (a Chinese or Arabic report tagged ``en``). Med-UniC (Sec. 4) filters reports by length (fewer
than three tokens); the checks here add what a real export needs, with a reason that the manifest
(:func:`monai_medunic.data.manifest.load_manifest`) and the corpora (:mod:`monai_medunic.data.corpora`)
count, never a silent change.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

__all__ = ["MAX_REPORT_CHARS", "LATIN_SCRIPT_LANGUAGES", "clean_report_text", "report_script", "report_text_problem"]

#: Reports longer than this many characters are dropped as ``long_report`` (the longest MIMIC-CXR and
#: PadChest reports have a few thousand characters; a longer "report" is a whole document, a
#: concatenation or an encoded blob, of which the tokenizer would keep only the first ``max_length`` tokens).
MAX_REPORT_CHARS = 20_000

#: Languages written in the Latin script: a report tagged with one of them whose letters are mostly of
#: another script (CJK, Arabic, Cyrillic ...) carries a wrong tag or the wrong text (``script_mismatch``).
LATIN_SCRIPT_LANGUAGES = frozenset(
    "af ca cs cy da de en es et eu fi fr ga gl hr hu id is it lb lt lv ms mt nb nl nn no pl pt ro sk sl sq sv sw tl tr "
    "vi yo".split()
)

# Unicode category Cc without tab, line feed and carriage return
_CONTROL_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def clean_report_text(text: str) -> tuple[str, int]:
    """Replace control characters (Unicode category ``Cc``, except tab and line breaks) with a space.

    Returns ``(text, number of characters replaced)``. Exports through HL7 or OCR leave form feeds,
    vertical tabs and escape sequences in report text; the tokenizer would make words of them.
    """
    return _CONTROL_RE.subn(" ", text)


def report_script(text: str) -> tuple[str, float]:
    """The most frequent script of the letters of ``text`` (``LATIN``, ``CJK``, ``ARABIC``, ``CYRILLIC`` ...,
    the first word of the characters' Unicode names) and its share of the letters."""
    if text.isascii():
        return ("LATIN", 1.0) if any(ch.isalpha() for ch in text) else ("NONE", 0.0)
    counts: Counter[str] = Counter()
    for ch in text:
        if ch.isalpha():
            counts[unicodedata.name(ch, "UNKNOWN").split(" ")[0]] += 1
    if not counts:
        return "NONE", 0.0
    script, n = counts.most_common(1)[0]
    return script, n / sum(counts.values())




def report_text_problem(text: str, language: str, max_chars: int | None = None) -> tuple[str, str] | None:
    """``(reason, message)`` when ``text`` is not a usable report of ``language``, else ``None``.

    Reasons: ``binary_report`` (a NUL character, or more than 4 control characters making over 10 % of the text), ``long_report``
    (more than ``max_chars`` characters, when given) and ``script_mismatch`` (the letters are mostly of
    another script than the Latin script of ``language``, one of :data:`LATIN_SCRIPT_LANGUAGES`).
    Stray control characters are no problem: :func:`clean_report_text` replaces them.
    """
    if "\x00" in text:
        return "binary_report", "the report holds NUL characters: binary data, not text"
    cleaned, n = clean_report_text(text)
    if n > max(4, 0.1 * len(text)):
        return "binary_report", f"{n} of {len(text)} characters of the report are control characters"
    if max_chars is not None and len(cleaned) > max_chars:
        return "long_report", f"the report has {len(cleaned):,} characters, the limit is {max_chars:,}"
    if language in LATIN_SCRIPT_LANGUAGES:
        script, share = report_script(cleaned)
        if script not in ("NONE", "LATIN") and share > 0.5:
            return ("script_mismatch",
                    f"the report's letters are {share:.0%} {script}, but its language '{language}' is written in Latin script")
    return None
