"""Checks on user input, run before anything is sent to the database.

Each check raises :class:`~pgqueue_lab.errors.InvalidInputError` with a message naming the
problem, so a bad call leaves the queue exactly as it was.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from ..errors import InvalidInputError

_SCHEMA_RE = re.compile(r"[a-z_][a-z0-9_]*")
#: Schema names are kept short so that the notification channel ``<schema>_jobs`` fits
#: PostgreSQL's 63-byte identifier limit.
MAX_SCHEMA_LENGTH = 50
_RESERVED_SCHEMAS = {"public", "information_schema"}


def schema_name(name: object) -> str:
    """Return ``name`` if it is a usable schema name for a queue.

    Lower-case letters, digits and ``_``, starting with a letter or ``_``, at most 50
    characters; not ``public``, ``information_schema`` or a ``pg_`` name (the queue's ``drop()``
    removes the whole schema).
    """
    if not isinstance(name, str):
        raise InvalidInputError(f"schema name must be a string, got {type(name).__name__}")
    if not _SCHEMA_RE.fullmatch(name) or len(name) > MAX_SCHEMA_LENGTH:
        raise InvalidInputError(
            f"invalid schema name {name!r}: use lower-case letters, digits and '_', starting "
            f"with a letter or '_', at most {MAX_SCHEMA_LENGTH} characters"
        )
    if name in _RESERVED_SCHEMAS or name.startswith("pg_"):
        raise InvalidInputError(
            f"invalid schema name {name!r}: it is a system schema, and dropping the queue "
            "drops its schema; choose a name of your own"
        )
    return name


def job_type(value: object, *, what: str = "job type") -> str:
    """Return ``value`` if it is a non-empty string without surrounding spaces, NUL characters
    or lone surrogates (PostgreSQL's ``text`` can hold neither)."""
    if not isinstance(value, str):
        raise InvalidInputError(f"{what} must be a string, got {type(value).__name__}: {value!r}")
    if not value.strip():
        raise InvalidInputError(f"{what} must not be empty")
    if value != value.strip():
        raise InvalidInputError(f"{what} {value!r} has leading or trailing spaces")
    if "\x00" in value:
        raise InvalidInputError(f"{what} {value!r} contains the NUL character, which text cannot store")
    _encodable(value, what)
    return value


#: The longest ``unique_key``, ``concurrency_key`` or schedule name, in characters. Keys live in
#: btree indexes, whose entries must fit about a third of a page (2704 bytes): 500 characters
#: take at most 2000 bytes in UTF-8, with room left for a schedule tick's key
#: (``schedule:<name>@<tick>``).
MAX_KEY_LENGTH = 500


def key(value: object, *, what: str) -> str:
    """Return ``value`` if it is a usable key or schedule name: as :func:`job_type`, and at most
    :data:`MAX_KEY_LENGTH` characters."""
    value = job_type(value, what=what)
    if len(value) > MAX_KEY_LENGTH:
        raise InvalidInputError(
            f"{what} is {len(value)} characters long; the limit is {MAX_KEY_LENGTH} "
            f"(keys live in an index): {value[:40]!r}..."
        )
    return value


def _encodable(text: str, what: str) -> None:
    """Refuse a lone surrogate (e.g. from a wrongly decoded file name): it is not UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = text[exc.start : exc.end]
        raise InvalidInputError(
            f"{what} contains {bad!r} at position {exc.start}, a lone surrogate that UTF-8 cannot encode"
        ) from None


#: Longest error text a failure records; longer text is cut (tracebacks belong in logs).
MAX_ERROR_LENGTH = 4000


def error_text(error: object) -> str:
    """The text to record for a failure, made storable: NUL characters and lone surrogates are
    escaped (``\\x00``, ``\\udc80``) and text over :data:`MAX_ERROR_LENGTH` characters is cut.

    A handler's error may hold any text; recording it must never fail.
    """
    text = str(error).replace("\x00", "\\x00")
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(text) > MAX_ERROR_LENGTH:
        text = text[: MAX_ERROR_LENGTH - 1] + "…"
    return text


#: A NUL character as json.dumps writes it (an escaped backslash before "u0000" is not one).
_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def not_json_text(payload: object) -> object:
    """Refuse a ``str`` that holds JSON text: it would be stored as one JSON string."""
    if isinstance(payload, str) and payload.lstrip()[:1] in ("{", "["):
        raise InvalidInputError(
            "payload is a str holding JSON text; pass the decoded object (json.loads(...)) so it "
            "is stored as a JSON object, not as one string"
        )
    return payload


def payload_json(payload: object) -> str:
    """Serialise a payload to JSON text, or say why it cannot be.

    Refused: values JSON cannot hold (sets, datetimes, objects...), NaN and infinity (not JSON),
    the NUL character (``jsonb`` cannot store it), and a *string* holding JSON text (it would
    be stored as one JSON string, not as the object it spells: pass ``json.loads(text)``).
    """
    not_json_text(payload)
    try:
        text = json.dumps(payload, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"payload is not JSON-serialisable: {exc}") from None
    if "\\u0000" in text and _NUL.search(text):
        raise InvalidInputError("payload contains the NUL character (\\u0000), which jsonb cannot store")
    _encodable(text, "payload")
    return text


def batch_json(jobs: list[dict[str, Any]]) -> str:
    """Serialise already-checked jobs (payloads not yet checked) as one JSON array.

    :raises InvalidInputError: naming the first job whose payload :func:`payload_json` refuses.
    """
    try:
        text = json.dumps(jobs, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError):
        text = ""
    if not text or ("\\u0000" in text and _NUL.search(text)) or not _utf8(text):
        for index, job in enumerate(jobs):
            try:
                payload_json(job["payload"])
            except InvalidInputError as exc:
                raise InvalidInputError(f"{exc} (job #{index} of the batch)") from None
    return text


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def positive_int(value: object, name: str) -> int:
    """Return ``value`` if it is an ``int`` >= 1 (``bool`` is refused)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(f"{name} must be an integer, got {type(value).__name__}: {value!r}")
    if value < 1:
        raise InvalidInputError(f"{name} must be at least 1, got {value}")
    return value


def per_key(value: object) -> int:
    """Return ``value`` if it is a usable ``per_key`` (see :mod:`pgqueue_lab.features.limits`):
    an ``int`` from 1 to 2**31 - 1 (it is compared with counts in SQL as an ``integer``).

    :raises InvalidInputError: naming the value.
    """
    return integer(positive_int(value, "per_key"), "per_key")


def integer(value: object, name: str, *, bits: int = 32) -> int:
    """Return ``value`` if it is an ``int`` that fits PostgreSQL's ``integer`` (``bits=64``:
    ``bigint``)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(f"{name} must be an integer, got {type(value).__name__}: {value!r}")
    if not -(2 ** (bits - 1)) <= value < 2 ** (bits - 1):
        raise InvalidInputError(f"{name} {value} does not fit a {bits}-bit integer")
    return value


#: The longest duration any argument may have: ten years, in seconds. Longer ones overflow
#: PostgreSQL's interval and timestamp arithmetic (``now() + make_interval(secs => 1e300)``).
MAX_SECONDS = 10 * 365 * 24 * 3600


def seconds(value: object, name: str) -> float:
    """Return ``value`` as a float if it is a finite number of seconds, >= 0 and at most
    :data:`MAX_SECONDS` (ten years)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInputError(f"{name} must be a number of seconds, got {type(value).__name__}: {value!r}")
    if not math.isfinite(value) or value < 0:
        raise InvalidInputError(f"{name} must be a finite number of seconds >= 0, got {value}")
    if value > MAX_SECONDS:
        raise InvalidInputError(f"{name} must be at most {MAX_SECONDS} seconds (ten years), got {value:g}")
    return float(value)


def queue_names(queues: Any) -> list[str] | None:
    """Return a list of queue names (or ``None`` for every queue)."""
    if queues is None:
        return None
    if isinstance(queues, str):
        queues = [queues]
    names = [job_type(q, what="queue name") for q in queues]
    if not names:
        raise InvalidInputError("queues must name at least one queue (or be None for all)")
    return names
