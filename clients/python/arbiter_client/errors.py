"""Errors as typed exceptions: one class per ERROR status, each carrying the status, its name, the server's
message and the request id; `retryable` says whether the same request may succeed if sent again."""

from __future__ import annotations

from .protocol import STATUSES


class ArbiterError(Exception):
    """An ERROR the server answered (or, for `ConnectionLost`, the connection's end)."""

    status = -1
    status_name = "?"
    retryable = False
    closes_connection = False

    def __init__(self, message: str, request_id: int = 0):
        super().__init__(f"{self.status_name}: {message}")
        self.message = message
        self.request_id = request_id


class ConnectionLost(ArbiterError):
    """The connection closed (or failed) with this request unanswered: it may be sent again on a new one."""

    status_name = "CONNECTION_LOST"
    retryable = True


class ClientTimeout(ArbiterError):
    """No answer within the request's deadline (the server may still answer; that answer is dropped)."""

    status_name = "CLIENT_TIMEOUT"
    retryable = True


def _class_name(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


ERRORS = {}
for _code, (_name, _closes, _retry) in STATUSES.items():
    if _code == 0:
        continue
    _cls = type(_class_name(_name), (ArbiterError,), {
        "status": _code, "status_name": _name, "retryable": _retry, "closes_connection": _closes,
        "__doc__": f"ERROR status {_code} ({_name}).",
    })
    ERRORS[_code] = _cls
    globals()[_cls.__name__] = _cls


class UnknownStatus(ArbiterError):
    """A status this client does not know: not retryable (the protocol says so)."""


def error_for(status: int, message: str, request_id: int = 0) -> ArbiterError:
    cls = ERRORS.get(status)
    if cls is None:
        e = UnknownStatus(message, request_id)
        e.status, e.status_name = status, f"STATUS_{status}"
        return e
    return cls(message, request_id)


__all__ = ["ArbiterError", "ConnectionLost", "ClientTimeout", "UnknownStatus", "error_for", "ERRORS"] + [
    c.__name__ for c in ERRORS.values()]
