"""Language codes understood by the text stack.

A language code is *known* when spaCy ships a tokenizer for it (``spacy/lang/<code>``): that is the
tokenizer :mod:`monai_medunic.text.vocab` uses to split a second-language corpus into words (Med-UniC,
Sec. 3.2, step 1). The check reads spaCy's package directory and does not import spaCy, so corpora
can validate their language tag cheaply.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re

from monai_medunic.errors import ConfigurationError

__all__ = ["known_language_codes", "validate_language_code"]

_CODE_RE = re.compile(r"^[a-z]{2,3}$")


@functools.lru_cache(maxsize=1)
def known_language_codes() -> frozenset[str]:
    """The ISO 639 codes for which spaCy has a rule-based tokenizer (``spacy.blank(code)`` works)."""
    spec = importlib.util.find_spec("spacy")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigurationError("spaCy is not installed: `pip install 'spacy>=3.7,<4'`")
    lang_dir = os.path.join(list(spec.submodule_search_locations)[0], "lang")
    codes = {
        name
        for name in os.listdir(lang_dir)
        if _CODE_RE.match(name) and os.path.isfile(os.path.join(lang_dir, name, "__init__.py"))
    }
    return frozenset(codes)


def validate_language_code(code: object, what: str = "language") -> str:
    """Return ``code`` normalised (lower case, stripped) or raise a :class:`ConfigurationError`.

    Args:
        code: an ISO 639-1/-3 code such as ``"en"`` or ``"es"``.
        what: how the error message names the value (e.g. the file whose language tag is wrong).

    Raises:
        ConfigurationError: the code is not a string or spaCy has no tokenizer for it.
    """
    if not isinstance(code, str) or not code.strip():
        raise ConfigurationError(f"{what}: a language code must be a non-empty string such as 'en' or 'es', got {code!r}")
    norm = code.strip().lower().replace("_", "-").split("-")[0]
    known = known_language_codes()
    if norm not in known:
        close = sorted(c for c in known if c[0] == norm[:1])[:12]
        raise ConfigurationError(
            f"{what}: unknown language code '{code}' (spaCy has no tokenizer for it); "
            f"codes starting with '{norm[:1]}': {close}"
        )
    return norm
