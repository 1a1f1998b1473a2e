"""Log lines: the plain format (default) or one JSON object per line (`ringmesh serve --log-json`,
or `ringmesh: log_json: true` in the config).

Every line names the host. A call may name the peer and the item it is about with
`extra=about(peer=..., item=...)`; the JSON format carries them as fields of their own (the
plain format leaves them in the message text, where the call already puts them).

    {"time": "2025-01-31T12:00:00.123Z", "level": "INFO", "host": "gh200-a",
     "logger": "ringmesh.node.runtime", "message": "got model/x.pth ...", "peer": "gh200-b",
     "item": "model/x.pth"}
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

FIELDS = ("peer", "item", "digest", "config_key")  # optional fields a call may give in `extra`


def about(**fields: Any) -> dict[str, Any]:
    """`extra=` for a log call: the peer/item/digest/config_key it concerns (None values left out)."""
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise TypeError(f"unknown log fields: {', '.join(sorted(unknown))}")
    return {k: v for k, v in fields.items() if v is not None}


class JsonFormatter(logging.Formatter):
    def __init__(self, host: str) -> None:
        super().__init__()
        self.host = host

    def format(self, record: logging.LogRecord) -> str:
        t = time.gmtime(record.created)
        doc: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "host": self.host,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for f in FIELDS:
            v = getattr(record, f, None)
            if v is not None:
                doc[f] = (
                    v
                    if isinstance(v, (str, int, float, bool))
                    else (list(v) if isinstance(v, (list, tuple, set)) else str(v))
                )
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


class PeerGone(logging.Filter):
    """grpcio logs an ERROR with a traceback when a servicer's answer cannot be sent because the
    caller went away (a peer killed or cut off mid-call, a client that gave up): grpc/grpc#32551
    logs it instead of raising it. That is ordinary churn for a peer, not a failure of ours, so
    it becomes one DEBUG line without the traceback; other records pass unchanged."""

    PREFIX = "ExecuteBatchError raised in core by servicer method"

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if (
            record.levelno >= logging.ERROR
            and type(exc).__name__ == "ExecuteBatchError"
            and str(record.msg).startswith(self.PREFIX)
        ):
            method = record.getMessage()[len(self.PREFIX) :].strip()
            record.msg, record.args, record.exc_info, record.exc_text = (
                f"the caller went away before the answer to {method} was sent",
                None,
                None,
                None,
            )
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger().isEnabledFor(logging.DEBUG)
        return True


GRPC_LOGGER = "grpc._cython.cygrpc"


def setup(host: str, *, json_lines: bool = False, verbose: bool = False, stream=None) -> None:
    """Configure the root logger for a daemon: level, format, one handler on stderr."""
    handler = logging.StreamHandler(stream or sys.stderr)
    if json_lines:
        handler.setFormatter(JsonFormatter(host))
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s {host} %(name)s: %(message)s"))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    grpc_log = logging.getLogger(GRPC_LOGGER)
    if not any(isinstance(f, PeerGone) for f in grpc_log.filters):
        grpc_log.addFilter(PeerGone())
