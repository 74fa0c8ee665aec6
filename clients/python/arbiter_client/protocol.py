"""Arbiter protocol version 1: frames and bodies, as proto-spec/PROTOCOL.md defines them.

Every message decodes into a dataclass whose fields carry the specification's names, and encodes back to the
same bytes. Pure Python (struct and array); numpy arrays are accepted where a SCORE takes numbers.
"""

from __future__ import annotations

import math
import struct
import sys
from array import array
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

MAGIC = b"ARBT"
PROTOCOL_VERSION = 1
HEADER = struct.Struct("<4sBBBBQIIQ")  # magic, version, opcode, flags, status, request_id, body_length, send_stamp, time
HEADER_SIZE = HEADER.size  # 32
FLAG_ZSTD = 0x01
SCORE_SUBJECT = 0x0001
COMPRESSION_ZSTD = 0x01

OPCODES = {
    "HELLO": 0x01, "HELLO_OK": 0x81, "PING": 0x02, "PONG": 0x82, "LIST_MODELS": 0x03, "MODELS": 0x83,
    "MODEL_INFO": 0x04, "SCHEMA": 0x84, "SCORE": 0x05, "RESULT": 0x85, "MODEL_STATUS": 0x06, "STATUS": 0x86,
    "RELOAD": 0x07, "RELOADED": 0x87, "ERROR": 0xFF,
}
OPCODE_NAMES = {v: k for k, v in OPCODES.items()}

# Status code: (name, closes the connection, may be retried unchanged).
STATUSES = {
    0: ("OK", False, False), 1: ("BAD_MAGIC", True, False), 2: ("UNSUPPORTED_VERSION", True, False),
    3: ("FRAME_TOO_LARGE", True, False), 4: ("UNKNOWN_OPCODE", False, False), 5: ("MALFORMED", False, False),
    6: ("HELLO_REQUIRED", False, False), 7: ("UNKNOWN_MODEL", False, False), 8: ("UNKNOWN_VERSION", False, False),
    9: ("SCHEMA_MISMATCH", False, False), 10: ("TOO_MANY_CANDIDATES", False, False),
    11: ("INVALID_FEATURE", False, False), 12: ("COMPRESSION_NOT_NEGOTIATED", False, False),
    13: ("BAD_COMPRESSION", False, False), 14: ("OVERLOADED", False, True), 15: ("DEADLINE_EXCEEDED", False, True),
    16: ("SHUTTING_DOWN", True, True), 17: ("INTERNAL", False, True), 18: ("PROTOCOL_VIOLATION", False, False),
    19: ("TIMEOUT", True, True), 20: ("TOO_MANY_CONNECTIONS", True, True), 21: ("UNAUTHENTICATED", True, False),
    22: ("FORBIDDEN", False, False), 23: ("INVALID_REQUEST", False, False),
}
STATUS_CODES = {name: code for code, (name, _, _) in STATUSES.items()}

FEATURE_KINDS = {0: "numeric", 1: "categorical"}
COLUMN_KINDS = {1: "float32", 2: "code"}
ROLES = {"active": 1, "split": 2, "shadow": 4}
OUTCOMES = {1: "loaded", 2: "rejected", 3: "unloaded"}


class ProtocolError(Exception):
    """Bytes from the server that do not follow the protocol (the connection cannot be trusted after it)."""


# ---------------------------------------------------------------------------------------------------------
# Messages


@dataclass
class Header:
    opcode: int
    request_id: int = 0
    body_length: int = 0
    flags: int = 0
    status: int = 0
    send_stamp: int = 0
    time: int = 0
    version: int = PROTOCOL_VERSION

    def pack(self) -> bytes:
        return HEADER.pack(MAGIC, self.version, self.opcode, self.flags, self.status, self.request_id,
                           self.body_length, self.send_stamp, self.time)

    @classmethod
    def unpack(cls, data: bytes) -> "Header":
        magic, version, opcode, flags, status, request_id, length, stamp, time = HEADER.unpack_from(data)
        if magic != MAGIC:
            raise ProtocolError(f"a frame starts with {magic!r}, not {MAGIC!r}: not an Arbiter server, or TLS expected")
        if version != PROTOCOL_VERSION:
            raise ProtocolError(f"a frame of protocol version {version}; this client speaks {PROTOCOL_VERSION}")
        return cls(opcode, request_id, length, flags, status, stamp, time, version)


@dataclass
class Hello:
    min_version: int = 1
    max_version: int = 1
    max_frame_bytes: int = 0
    compression: int = 0
    client_name: str = "arbiter-python"
    token: Optional[str] = None


@dataclass
class HelloOK:
    version: int
    max_frame_bytes: int
    max_candidates: int
    max_in_flight: int
    compression: int
    server_name: str


@dataclass
class Ping:
    payload: bytes = b""


@dataclass
class Pong:
    payload: bytes = b""


@dataclass
class ListModels:
    pass


@dataclass
class ModelSummary:
    version: int
    context_feature_count: int
    candidate_feature_count: int
    name: str
    kind: str


@dataclass
class Models:
    models: List[ModelSummary]


@dataclass
class ModelInfo:
    model: str
    version: int = 0


@dataclass
class Feature:
    name: str
    kind: str  # "numeric" or "categorical"
    cardinality: int = 0
    missing: bool = False  # accepts a missing value (NaN)


@dataclass
class ColumnSpec:
    name: str
    kind: str  # "float32" or "code"
    labels: List[str] = field(default_factory=list)


@dataclass
class Schema:
    version: int
    created_unix_ms: int
    model: str
    kind: str
    context_features: List[Feature]
    candidate_features: List[Feature]
    outputs: List[ColumnSpec]


@dataclass
class ScoreRequest:
    """A SCORE: `candidate_features` is the row-major N × F matrix (a flat sequence, or an N × F numpy array)."""
    model: str
    context: Sequence[float]
    candidate_ids: Sequence[int]
    candidate_features: Sequence[float]
    candidate_feature_count: int
    version: int = 0
    routing_key: int = 0
    top_k: int = 0
    subject_id: Optional[int] = None


@dataclass
class Column:
    name: str
    kind: str  # "float32" or "code"
    labels: List[str]
    values: List  # floats, or codes (ints) indexing `labels`

    def value(self, row: int):
        """A row's value: the float, or the code's label."""
        v = self.values[row]
        if self.kind == "code":
            return self.labels[v] if v < len(self.labels) else None
        return v


@dataclass
class Result:
    version: int
    queue_us: int
    compute_us: int
    ids: List[int]
    scores: List[float]
    columns: List[Column]
    sorted: bool

    def column(self, name: str) -> List:
        """A column's values by name (labels for a code column)."""
        for c in self.columns:
            if c.name == name:
                return [c.value(i) for i in range(len(self.ids))]
        raise KeyError(f"no column {name!r} in this result (columns: {', '.join(c.name for c in self.columns)})")

    def rows(self) -> List[dict]:
        """One dict per row: id, score and every column (labels for codes)."""
        out = []
        for i, cid in enumerate(self.ids):
            row = {"id": cid, "score": self.scores[i]}
            for c in self.columns:
                row[c.name] = c.value(i)
            out.append(row)
        return out


@dataclass
class ModelStatusRequest:
    model: str = ""


@dataclass
class VersionStatus:
    version: int
    roles: List[str]
    split_weight: float


@dataclass
class RejectedVersion:
    version: int
    reason: str


@dataclass
class ShadowComparison:
    served: int
    requests: int
    rows: int
    mean_abs_difference: float
    max_abs_difference: float
    ranked_requests: int
    mean_rank_correlation: float
    code_rows: int
    changed_codes: int
    dropped: int
    failed: int
    code_column: str


@dataclass
class ShadowStatus:
    version: int
    sample: float
    comparisons: List[ShadowComparison]


@dataclass
class ModelStatus:
    active: int
    latest: int
    name: str
    kind: str
    failure: str
    versions: List[VersionStatus]
    rejected: List[RejectedVersion]
    shadow: Optional[ShadowStatus] = None


@dataclass
class Status:
    models: List[ModelStatus]


@dataclass
class Reload:
    pass


@dataclass
class ReloadEvent:
    version: int
    outcome: str  # "loaded", "rejected" or "unloaded"
    model: str
    detail: str


@dataclass
class Reloaded:
    generation: int
    events: List[ReloadEvent]


@dataclass
class ErrorBody:
    message: str


MESSAGE_OPCODES = {
    Hello: "HELLO", HelloOK: "HELLO_OK", Ping: "PING", Pong: "PONG", ListModels: "LIST_MODELS", Models: "MODELS",
    ModelInfo: "MODEL_INFO", Schema: "SCHEMA", ScoreRequest: "SCORE", Result: "RESULT",
    ModelStatusRequest: "MODEL_STATUS", Status: "STATUS", Reload: "RELOAD", Reloaded: "RELOADED", ErrorBody: "ERROR",
}


# ---------------------------------------------------------------------------------------------------------
# Encoding


def _str(s: str, limit: int = 255) -> bytes:
    b = s.encode("utf-8")
    if len(b) > limit:
        raise ValueError(f"{s[:40]!r}… is {len(b)} bytes of UTF-8, over the protocol's limit of {limit}")
    return struct.pack("<H", len(b)) + b


def _pad(b: bytearray, n: int) -> None:
    b.extend(b"\x00" * (-len(b) % n))


def f32_bytes(values) -> bytes:
    """Little-endian f32s from a sequence or a numpy array."""
    if hasattr(values, "dtype") and hasattr(values, "astype"):  # numpy, without importing it
        return values.astype("<f4", copy=False).tobytes()
    a = array("f", values)
    if sys.byteorder == "big":
        a.byteswap()
    return a.tobytes()


def u64_bytes(values) -> bytes:
    if hasattr(values, "dtype") and hasattr(values, "astype"):
        return values.astype("<u8", copy=False).tobytes()
    a = array("Q", values)
    if sys.byteorder == "big":
        a.byteswap()
    return a.tobytes()


def encode_body(message) -> bytes:
    """The body of a message (any of the dataclasses above)."""
    b = bytearray()
    if isinstance(message, Hello):
        b += struct.pack("<HHII", message.min_version, message.max_version, message.max_frame_bytes, message.compression)
        b += _str(message.client_name)
        if message.token is not None:
            b += _str(message.token)
    elif isinstance(message, HelloOK):
        b += struct.pack("<HHIIII", message.version, 0, message.max_frame_bytes, message.max_candidates,
                         message.max_in_flight, message.compression) + _str(message.server_name)
    elif isinstance(message, (Ping, Pong)):
        b += message.payload
    elif isinstance(message, (ListModels, Reload)):
        pass
    elif isinstance(message, Models):
        b += struct.pack("<I", len(message.models))
        for m in message.models:
            b += struct.pack("<QHH", m.version, m.context_feature_count, m.candidate_feature_count) + _str(m.name) + _str(m.kind)
    elif isinstance(message, ModelInfo):
        b += struct.pack("<Q", message.version) + _str(message.model)
    elif isinstance(message, Schema):
        b += struct.pack("<QQ", message.version, message.created_unix_ms) + _str(message.model) + _str(message.kind)
        for features in (message.context_features, message.candidate_features):
            b += struct.pack("<H", len(features))
            for f in features:
                kind = {"numeric": 0, "categorical": 1}[f.kind] | (0x80 if f.missing else 0)
                b += struct.pack("<BI", kind, f.cardinality) + _str(f.name)
        b += struct.pack("<H", len(message.outputs))
        for c in message.outputs:
            b += struct.pack("<BB", {"float32": 1, "code": 2}[c.kind], len(c.labels)) + _str(c.name)
            for label in c.labels:
                b += _str(label)
    elif isinstance(message, ScoreRequest):
        b += encode_score(message)
    elif isinstance(message, Result):
        b += struct.pack("<QIIIHH", message.version, message.queue_us, message.compute_us, len(message.ids),
                         len(message.columns), 1 if message.sorted else 0)
        b += u64_bytes(message.ids) + f32_bytes(message.scores)
        for c in message.columns:
            b += struct.pack("<BB", {"float32": 1, "code": 2}[c.kind], len(c.labels)) + _str(c.name)
            for label in c.labels:
                b += _str(label)
            _pad(b, 4)
            if c.kind == "float32":
                b += f32_bytes(c.values)
            else:
                b += bytes(c.values)
                _pad(b, 4)
    elif isinstance(message, ModelStatusRequest):
        b += _str(message.model)
    elif isinstance(message, Status):
        b += struct.pack("<I", len(message.models))
        for m in message.models:
            b += struct.pack("<QQ", m.active, m.latest) + _str(m.name) + _str(m.kind) + _str(m.failure, 1024)
            b += struct.pack("<H", len(m.versions))
            for v in m.versions:
                b += struct.pack("<QBBHf", v.version, sum(ROLES[r] for r in v.roles), 0, 0, v.split_weight)
            b += struct.pack("<H", len(m.rejected))
            for r in m.rejected:
                b += struct.pack("<Q", r.version) + _str(r.reason, 1024)
            if m.shadow is None:
                b += b"\x00"
                continue
            s = m.shadow
            b += b"\x01" + struct.pack("<QfH", s.version, s.sample, len(s.comparisons))
            for c in s.comparisons:
                b += struct.pack("<QQQddQdQQQQ", c.served, c.requests, c.rows, c.mean_abs_difference, c.max_abs_difference,
                                 c.ranked_requests, c.mean_rank_correlation, c.code_rows, c.changed_codes, c.dropped, c.failed)
                b += _str(c.code_column)
    elif isinstance(message, Reloaded):
        b += struct.pack("<QI", message.generation, len(message.events))
        for e in message.events:
            outcome = {v: k for k, v in OUTCOMES.items()}[e.outcome]
            b += struct.pack("<QB", e.version, outcome) + _str(e.model) + _str(e.detail, 1024)
    elif isinstance(message, ErrorBody):
        b += _str(message.message, 1024)
    else:
        raise TypeError(f"not a protocol message: {type(message).__name__}")
    return bytes(b)


def encode_score(r: ScoreRequest) -> bytes:
    name = r.model.encode("utf-8")
    if not 1 <= len(name) <= 255:
        raise ValueError(f"a model name is 1 to 255 bytes of UTF-8, got {len(name)}")
    n = len(r.candidate_ids)
    f = r.candidate_feature_count
    matrix = f32_bytes(r.candidate_features)
    if len(matrix) != 4 * n * f:
        raise ValueError(f"{n} candidates of {f} features need {n * f} values; the matrix has {len(matrix) // 4}")
    flags = SCORE_SUBJECT if r.subject_id is not None else 0
    b = bytearray(struct.pack("<QQIIIIHH", r.version, r.routing_key, r.top_k, len(r.context), n, f, flags, len(name)))
    b += name
    _pad(b, 8)
    if r.subject_id is not None:
        b += struct.pack("<Q", r.subject_id)
    b += f32_bytes(r.context)
    _pad(b, 8)
    b += u64_bytes(r.candidate_ids)
    b += matrix
    return bytes(b)


def encode_frame(message, request_id: int, *, send_stamp: int = 0, time: int = 0, status: int = 0,
                 compress=None) -> bytes:
    """A whole frame. `compress(body) -> bytes or None` may compress the body (the ZSTD flag is set if it does)."""
    body = encode_body(message)
    flags = 0
    if compress is not None:
        packed = compress(body)
        if packed is not None and len(packed) < len(body):
            body, flags = packed, FLAG_ZSTD
    opcode = OPCODES[MESSAGE_OPCODES[type(message)]]
    return Header(opcode, request_id, len(body), flags, status, send_stamp, time).pack() + body


# ---------------------------------------------------------------------------------------------------------
# Decoding


_STRUCTS: dict = {}


class _Reader:
    def __init__(self, body: bytes, what: str):
        self.b = memoryview(body)
        self.o = 0
        self.what = what

    def need(self, n: int) -> None:
        if self.o + n > len(self.b):
            raise ProtocolError(f"{self.what} body ends {self.o + n - len(self.b)} bytes early")

    def unpack(self, fmt: str):
        s = _STRUCTS.get(fmt)
        if s is None:
            s = _STRUCTS[fmt] = struct.Struct("<" + fmt)
        self.need(s.size)
        v = s.unpack_from(self.b, self.o)
        self.o += s.size
        return v

    def str(self) -> str:
        (n,) = self.unpack("H")
        self.need(n)
        try:
            s = bytes(self.b[self.o:self.o + n]).decode("utf-8")
        except UnicodeDecodeError as e:
            raise ProtocolError(f"{self.what}: a string that is not UTF-8 ({e})")
        self.o += n
        return s

    def pad(self, n: int) -> None:
        self.o += -self.o % n

    def array(self, code: str, count: int) -> list:
        a = array(code)
        size = a.itemsize * count
        self.need(size)
        a.frombytes(self.b[self.o:self.o + size])
        if sys.byteorder == "big":
            a.byteswap()
        self.o += size
        return a.tolist()

    def rest(self) -> bytes:
        r = bytes(self.b[self.o:])
        self.o = len(self.b)
        return r

    def end(self) -> None:
        if self.o != len(self.b):
            raise ProtocolError(f"{self.what} body has {len(self.b) - self.o} bytes after its last field")


def decode_body(opcode: int, body: bytes):
    """The message a body holds, by opcode."""
    name = OPCODE_NAMES.get(opcode)
    if name is None:
        raise ProtocolError(f"opcode 0x{opcode:02x} is not defined in protocol v1")
    r = _Reader(body, name)
    if name == "HELLO":
        mn, mx, frame, comp = r.unpack("HHII")
        client = r.str()
        token = r.str() if r.o < len(r.b) else None
        m = Hello(mn, mx, frame, comp, client, token)
    elif name == "HELLO_OK":
        version, _, frame, cands, inflight, comp = r.unpack("HHIIII")
        m = HelloOK(version, frame, cands, inflight, comp, r.str())
    elif name in ("PING", "PONG"):
        m = (Ping if name == "PING" else Pong)(r.rest())
    elif name == "LIST_MODELS":
        m = ListModels()
    elif name == "RELOAD":
        m = Reload()
    elif name == "MODELS":
        (count,) = r.unpack("I")
        models = []
        for _ in range(count):
            version, c, f = r.unpack("QHH")
            models.append(ModelSummary(version, c, f, r.str(), r.str()))
        m = Models(models)
    elif name == "MODEL_INFO":
        (version,) = r.unpack("Q")
        m = ModelInfo(r.str(), version)
    elif name == "SCHEMA":
        version, created = r.unpack("QQ")
        model, kind = r.str(), r.str()
        lists = []
        for _ in range(2):
            (count,) = r.unpack("H")
            features = []
            for _ in range(count):
                k, card = r.unpack("BI")
                features.append(Feature(r.str(), FEATURE_KINDS.get(k & 0x7F, f"unknown({k & 0x7F})"), card, bool(k & 0x80)))
            lists.append(features)
        (count,) = r.unpack("H")
        outputs = []
        for _ in range(count):
            k, nl = r.unpack("BB")
            cname = r.str()
            outputs.append(ColumnSpec(cname, COLUMN_KINDS.get(k, f"unknown({k})"), [r.str() for _ in range(nl)]))
        m = Schema(version, created, model, kind, lists[0], lists[1], outputs)
    elif name == "SCORE":
        version, key, top_k, c, n, f, flags, name_len = r.unpack("QQIIIIHH")
        r.need(name_len)
        model = bytes(r.b[r.o:r.o + name_len]).decode("utf-8")
        r.o += name_len
        r.pad(8)
        subject = r.unpack("Q")[0] if flags & SCORE_SUBJECT else None
        context = r.array("f", c)
        r.pad(8)
        ids = r.array("Q", n)
        m = ScoreRequest(model, context, ids, r.array("f", n * f), f, version, key, top_k, subject)
    elif name == "RESULT":
        version, queue, compute, rows, ncols, flags = r.unpack("QIIIHH")
        ids = r.array("Q", rows)
        scores = r.array("f", rows)
        columns = []
        for _ in range(ncols):
            k, nl = r.unpack("BB")
            cname = r.str()
            labels = [r.str() for _ in range(nl)]
            r.pad(4)
            if k == 1:
                values = r.array("f", rows)
            elif k == 2:
                values = r.array("B", rows)
                r.pad(4)
            else:
                raise ProtocolError(f"RESULT column {cname!r} has kind {k}, which protocol v1 does not define")
            columns.append(Column(cname, COLUMN_KINDS[k], labels, values))
        m = Result(version, queue, compute, ids, scores, columns, bool(flags & 1))
    elif name == "MODEL_STATUS":
        m = ModelStatusRequest(r.str())
    elif name == "STATUS":
        (count,) = r.unpack("I")
        models = []
        for _ in range(count):
            active, latest = r.unpack("QQ")
            mname, kind, failure = r.str(), r.str(), r.str()
            (nv,) = r.unpack("H")
            versions = []
            for _ in range(nv):
                v, roles, _, _, weight = r.unpack("QBBHf")
                versions.append(VersionStatus(v, [k for k, bit in ROLES.items() if roles & bit], weight))
            (nr,) = r.unpack("H")
            rejected = []
            for _ in range(nr):
                (v,) = r.unpack("Q")
                rejected.append(RejectedVersion(v, r.str()))
            (has_shadow,) = r.unpack("B")
            shadow = None
            if has_shadow:
                sv, sample, nc = r.unpack("QfH")
                comparisons = []
                for _ in range(nc):
                    vals = r.unpack("QQQddQdQQQQ")
                    comparisons.append(ShadowComparison(*vals, r.str()))
                shadow = ShadowStatus(sv, sample, comparisons)
            models.append(ModelStatus(active, latest, mname, kind, failure, versions, rejected, shadow))
        m = Status(models)
    elif name == "RELOADED":
        generation, count = r.unpack("QI")
        events = []
        for _ in range(count):
            v, outcome = r.unpack("QB")
            events.append(ReloadEvent(v, OUTCOMES.get(outcome, f"unknown({outcome})"), r.str(), r.str()))
        m = Reloaded(generation, events)
    elif name == "ERROR":
        m = ErrorBody(r.str())
    else:  # pragma: no cover - every opcode is handled above
        raise ProtocolError(name)
    r.end()
    return m


def monotonic_stamp() -> int:
    """The low 32 bits of this process's monotonic clock in µs, never 0 (a SCORE's send stamp)."""
    import time as _time
    s = (_time.monotonic_ns() // 1000) & 0xFFFFFFFF
    return s or 1


def is_nan(x) -> bool:
    return isinstance(x, float) and math.isnan(x)
