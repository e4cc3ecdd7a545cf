"""Names that become keys, dataset names and folder names: one rule for all, checked before any work starts.

A round's name is stored as its id and derives its dataset (``r1-pairs``) and run folder (``runs/r1``); a dataset
name is a folder under the snapshot root and the key of ``NAME@vN``. Letters, digits, '.', '_' and '-' (first a
letter or digit) keep each of those a single, portable path part that reads back as written.
"""

from __future__ import annotations

import re

from alignloop.warehouse.errors import InputError

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
MAX_LENGTH = 200
"""Characters at most: a folder name is at most 255 bytes, and a name may get a suffix (``-unpaired``)."""


def check_name(value: str, what: str, field: str | None = None) -> str:
    """``value`` if it is a valid name, else one line naming ``what`` (e.g. "round name") and the value."""
    if not NAME.fullmatch(value or ""):
        raise InputError(f"{what} {value!r} must be letters, digits, '.', '_' or '-', starting with a letter or digit "
                         "(no spaces, '/' or '@')", field=field)
    if len(value) > MAX_LENGTH:
        raise InputError(f"{what} {value[:20]!r}... is {len(value)} characters long; at most {MAX_LENGTH}",
                         field=field)
    return value
