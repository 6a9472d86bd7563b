"""Structured JSON logs with a correlation id; nothing secret or personal is ever put into a record here.

Callers log identifiers that are not personal (source, stream, run id, counts) through ``extra``; the formatter
emits them as JSON fields. ``correlation_id`` is carried in a context variable (set per API request or sync).
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson

correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("correlation_id", default=None)

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "taskName"}


_CID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def new_correlation_id(given: str | None = None) -> str:
    """Adopt a caller's request id when it is a plain token (never echo arbitrary text into logs), else mint one."""
    cid = given if given and _CID.match(given) else uuid.uuid4().hex
    correlation_id.set(cid)
    return cid


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if cid := correlation_id.get():
            doc["correlation_id"] = cid
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


def configure(level: str = "INFO", *, json: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    plain = logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    handler.setFormatter(JsonFormatter() if json else plain)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpcore", "zeep", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
