"""Folder names derived from study names: a study name is data, never a path.

Example:
    >>> safe_name("digits-3-tfg-1a2b3c4d")
    'digits-3-tfg-1a2b3c4d'
    >>> safe_name("../../elsewhere")
    'elsewhere-8b49905a'
    >>> "/" in safe_name("a/../x") or safe_name("..") in (".", "..")
    False
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

MAX_LENGTH = 80
"""Longest folder name produced (a hash keeps longer names distinct)."""
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(name: str) -> str:
    """One path component for ``name``: letters, digits, ``.``, ``_`` and ``-`` only, no leading
    dot, at most :data:`MAX_LENGTH` characters. A name that had to change gets 8 hex digits of its
    hash, so two different names never share a folder."""
    text = unicodedata.normalize("NFKD", str(name)).encode("ascii", "ignore").decode("ascii")
    text = _UNSAFE.sub("_", text).strip("._-")
    text = re.sub(r"\.{2,}", ".", text)
    if text == name and 0 < len(text) <= MAX_LENGTH:
        return text
    digest = hashlib.sha1(str(name).encode("utf-8", "surrogatepass")).hexdigest()[:8]
    stem = text[: MAX_LENGTH - 9].rstrip("._-") or "study"
    return f"{stem}-{digest}"
