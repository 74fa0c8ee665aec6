"""An asyncio client for arbiterd: one connection (`Client`), or several balanced (`Pool`).

Requests are pipelined: many may be outstanding on one connection (up to the server's max_in_flight), and
answers are matched by request id, whatever their order.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import math
import ssl as _ssl
import time
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Union

from . import protocol as p
from .errors import ArbiterError, ClientTimeout, ConnectionLost, error_for

try:  # zstd is optional: offered in HELLO only when the package is installed
    import zstandard as _zstd
except ImportError:  # pragma: no cover - depends on the environment
    _zstd = None

Number = Union[int, float]


def zstd_available() -> bool:
    return _zstd is not None


class Client:
    """One connection to arbiterd. Create it with `await Client.connect(...)`; use it from one event loop."""

    def __init__(self):
        self._reader: Optional[asyncio.StreamReader] = None
        self._writer: Optional[asyncio.StreamWriter] = None
        self._pending: Dict[int, asyncio.Future] = {}
        self._ids = itertools.count(1)
        self._read_task: Optional[asyncio.Task] = None
        self._closed: Optional[ArbiterError] = None
        self._schemas: Dict[tuple, p.Schema] = {}
        self._compressor = None
        self._decompressor = None
        self._slots: Optional[asyncio.Semaphore] = None
        self.session: Optional[p.HelloOK] = None
        self.compression_threshold = 4096
        self.max_response_bytes = 64 << 20
        self.stamp = True

    # -- connecting --------------------------------------------------------------------------------------

    @classmethod
    async def connect(cls, host: str = "127.0.0.1", port: int = 7878, *, token: Optional[str] = None,
                      compression: bool = True, client_name: str = "arbiter-python",
                      max_response_bytes: int = 64 << 20, timeout: float = 5.0,
                      ssl: Optional[_ssl.SSLContext] = None, server_hostname: Optional[str] = None,
                      stamp: bool = True) -> "Client":
        """Connects and completes HELLO. `compression` offers zstd when the `zstandard` package is installed;
        `token` is sent in HELLO for a server that requires one; `ssl` speaks TLS with that context; `timeout`
        bounds the connect and the HELLO. `stamp` sends each SCORE's send time (the server counts deadlines
        and sheds load from it)."""
        c = cls()
        c.max_response_bytes = max_response_bytes
        c.stamp = stamp
        try:
            c._reader, c._writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, ssl=ssl, server_hostname=server_hostname if ssl else None), timeout)
        except asyncio.TimeoutError:
            raise ConnectionLost(f"cannot connect to {host}:{port} within {timeout} s") from None
        except OSError as e:
            raise ConnectionLost(f"cannot connect to {host}:{port}: {e.strerror or e}") from None
        c._read_task = asyncio.get_running_loop().create_task(c._read_loop())
        offer = p.COMPRESSION_ZSTD if compression and _zstd is not None else 0
        try:
            ok = await c._request(p.Hello(1, 1, max_response_bytes, offer, client_name, token), deadline=timeout)
        except BaseException:
            await c.close()
            raise
        if not isinstance(ok, p.HelloOK):
            await c.close()
            raise p.ProtocolError(f"HELLO was answered {type(ok).__name__}")
        c.session = ok
        c._slots = asyncio.Semaphore(max(1, ok.max_in_flight))
        if ok.compression & p.COMPRESSION_ZSTD:
            c._compressor = _zstd.ZstdCompressor(level=1, write_content_size=True)
            c._decompressor = _zstd.ZstdDecompressor()
        return c

    @property
    def compressed(self) -> bool:
        """Whether zstd was negotiated."""
        return self._compressor is not None

    async def close(self) -> None:
        """Closes the connection; requests still outstanding fail with `ConnectionLost`."""
        if self._writer is not None:
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except (OSError, ConnectionError):
                pass
        if self._read_task is not None:
            self._read_task.cancel()
            try:
                await self._read_task
            except (asyncio.CancelledError, Exception):
                pass
        self._fail_all(ConnectionLost("the connection was closed by this client"))

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    @property
    def outstanding(self) -> int:
        """Requests sent and not yet answered."""
        return len(self._pending)

    # -- requests ----------------------------------------------------------------------------------------

    async def ping(self, payload: bytes = b"", deadline: Optional[float] = 5.0) -> float:
        """Round-trip time in seconds."""
        start = time.perf_counter()
        pong = await self._request(p.Ping(payload), deadline=deadline)
        if pong.payload != payload:
            raise p.ProtocolError("PONG did not echo the PING's payload")
        return time.perf_counter() - start

    async def models(self, deadline: Optional[float] = 5.0) -> List[p.ModelSummary]:
        """The models served (their active versions)."""
        return (await self._request(p.ListModels(), deadline=deadline)).models

    async def info(self, model: str, version: int = 0, deadline: Optional[float] = 5.0) -> p.Schema:
        """A model's schema: its features in the order SCORE sends them, and its output columns."""
        schema = await self._request(p.ModelInfo(model, version), deadline=deadline)
        self._schemas[(model, version)] = schema
        return schema

    async def status(self, model: str = "", deadline: Optional[float] = 5.0) -> List[p.ModelStatus]:
        """Every model's deployment (or one's): versions loaded and their roles, rejections, the shadow."""
        return (await self._request(p.ModelStatusRequest(model), deadline=deadline)).models

    async def reload(self, deadline: Optional[float] = 60.0) -> p.Reloaded:
        """Asks the server to check its store now; answers once every event loop serves the result."""
        return await self._request(p.Reload(), deadline=deadline)

    async def score(self, model: str, context: Union[Mapping[str, Optional[Number]], Sequence[Number]],
                    candidates, ids: Sequence[int], *, top_k: int = 0, version: int = 0, routing_key: int = 0,
                    subject: Optional[int] = None, deadline: Optional[float] = None) -> p.Result:
        """Scores candidates for one context.

        `context`: a dict by feature name, or the values in the schema's order. `candidates`: a list of dicts
        by feature name, a list of rows in the schema's order, or an N × F numpy array. None (in dicts and
        rows) and NaN are a missing value, for features that accept one. `ids`: one non-negative integer per
        candidate, echoed in the answer. `deadline`: seconds; sent as the request's budget (the server answers
        DEADLINE_EXCEEDED rather than score it late) and waited for here (`ClientTimeout` after it).
        """
        request = await self.build_request(model, context, candidates, ids, top_k=top_k, version=version,
                                           routing_key=routing_key, subject=subject)
        return await self.score_request(request, deadline=deadline)

    async def build_request(self, model: str, context: Union[Mapping[str, Optional[Number]], Sequence[Number]],
                            candidates, ids: Sequence[int], *, top_k: int = 0, version: int = 0, routing_key: int = 0,
                            subject: Optional[int] = None) -> p.ScoreRequest:
        """The SCORE `score` sends, checked and in the schema's order (the schema is asked for, once, when the
        context or the candidates are given by feature name)."""
        schema = None
        if isinstance(context, Mapping) or _rows_are_dicts(candidates):
            schema = self._schemas.get((model, version)) or await self.info(model, version)
        ctx = _vector(context, schema.context_features if schema else None, "context")
        if hasattr(candidates, "shape") and len(getattr(candidates, "shape")) == 2:
            matrix, f = candidates, int(candidates.shape[1])
            n = int(candidates.shape[0])
        else:
            rows = list(candidates)
            features = schema.candidate_features if schema else None
            flat: List[float] = []
            f = None
            for i, row in enumerate(rows):
                v = _vector(row, features, f"candidate {i}")
                if f is None:
                    f = len(v)
                elif len(v) != f:
                    raise ValueError(f"candidate {i} has {len(v)} values, candidate 0 has {f}")
                flat.extend(v)
            matrix, n = flat, len(rows)
            if f is None:
                f = len(schema.candidate_features) if schema else 0
        ids = list(ids)
        if len(ids) != n:
            raise ValueError(f"{n} candidates and {len(ids)} ids: every candidate needs an id")
        for i, cid in enumerate(ids):
            if not isinstance(cid, int) or cid < 0 or cid >= 1 << 64:
                raise ValueError(f"candidate {i}: the id {cid!r} is not an integer in 0..2^64-1")
        return p.ScoreRequest(model, ctx, ids, matrix, f, version, routing_key, top_k, subject)

    async def score_request(self, request: p.ScoreRequest, deadline: Optional[float] = None) -> p.Result:
        """Sends a prepared SCORE (values in the schema's order)."""
        return await self._request(request, deadline=deadline)

    # -- the connection ----------------------------------------------------------------------------------

    async def _request(self, message, deadline: Optional[float]):
        if self._closed is not None:
            raise copy.copy(self._closed)
        if self._writer is None:
            raise ConnectionLost("not connected")
        request_id = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        budget = 0
        if deadline is not None:
            if deadline <= 0:
                del self._pending[request_id]
                raise ClientTimeout("the deadline had passed before the request was sent", request_id)
            budget = min(int(deadline * 1e6), (1 << 63) - 1)
        stamp = p.monotonic_stamp() if self.stamp and isinstance(message, p.ScoreRequest) else 0
        compress = None
        if self._compressor is not None:
            threshold = self.compression_threshold
            compress = lambda body: self._compressor.compress(body) if len(body) >= threshold else None  # noqa: E731
        try:
            frame = p.encode_frame(message, request_id, send_stamp=stamp, time=budget, compress=compress)
        except BaseException:
            del self._pending[request_id]
            raise
        if self.session is not None and len(frame) - p.HEADER_SIZE > self.session.max_frame_bytes:
            del self._pending[request_id]
            raise error_for(p.STATUS_CODES["FRAME_TOO_LARGE"],
                            f"the request's body is {len(frame) - p.HEADER_SIZE} bytes, over the server's max_frame_bytes of {self.session.max_frame_bytes}",
                            request_id)
        slots = self._slots
        try:
            if slots is not None:
                # At most the server's max_in_flight outstanding: the rest wait here, not in the server's queue.
                await slots.acquire()
            try:
                self._writer.write(frame)
                await self._writer.drain()
                if deadline is None:
                    return await future
                return await asyncio.wait_for(asyncio.shield(future), deadline)
            finally:
                if slots is not None:
                    slots.release()
        except asyncio.TimeoutError:
            raise ClientTimeout(f"no answer within {deadline} s", request_id) from None
        except (ConnectionError, OSError) as e:
            raise ConnectionLost(f"the connection failed: {e}", request_id) from None
        finally:
            self._pending.pop(request_id, None)

    async def _read_loop(self) -> None:
        error: ArbiterError = ConnectionLost("the server closed the connection")
        try:
            while True:
                head = await self._reader.readexactly(p.HEADER_SIZE)
                header = p.Header.unpack(head)
                if header.body_length > max(self.max_response_bytes, 1 << 20) + 64:
                    raise p.ProtocolError(f"a frame of {header.body_length} bytes, over this client's limit")
                body = await self._reader.readexactly(header.body_length)
                if header.flags & p.FLAG_ZSTD:
                    if self._decompressor is None:
                        raise p.ProtocolError("a compressed frame on a connection that did not negotiate zstd")
                    body = self._decompressor.decompress(body, max_output_size=self.max_response_bytes)
                if header.opcode == p.OPCODES["ERROR"]:
                    message = p.decode_body(header.opcode, body).message
                    e = error_for(header.status, message, header.request_id)
                    future = self._pending.get(header.request_id)
                    if future is not None and not future.done():
                        future.set_exception(e)
                    elif header.request_id == 0:
                        # About the connection (TIMEOUT, SHUTTING_DOWN, TOO_MANY_CONNECTIONS): what is outstanding
                        # now will not be answered.
                        error = e
                        if e.closes_connection:
                            self._fail_all(e)
                    continue
                message = p.decode_body(header.opcode, body)
                future = self._pending.get(header.request_id)
                if future is not None and not future.done():
                    future.set_result(message)
        except asyncio.IncompleteReadError:
            pass
        except asyncio.CancelledError:
            error = ConnectionLost("the connection was closed by this client")
        except p.ProtocolError as e:
            error = ConnectionLost(f"the server sent bytes this client cannot read: {e}")
            self._writer.close()
        except Exception as e:  # a reset, a TLS failure, a zstd error
            error = ConnectionLost(f"the connection failed: {e}")
            self._writer.close()
        self._closed = error
        self._fail_all(error)

    def _fail_all(self, error: ArbiterError) -> None:
        if self._closed is None:
            self._closed = error
        for request_id, future in list(self._pending.items()):
            if not future.done():
                e = copy.copy(error)
                e.request_id = request_id
                future.set_exception(e)
                future.exception()  # retrieved here: a caller that gave up on it is not warned
        self._pending.clear()


class Pool:
    """Several connections to one server; each request goes to the connection with the fewest outstanding."""

    def __init__(self, clients: List[Client]):
        self.clients = clients

    @classmethod
    async def connect(cls, host: str = "127.0.0.1", port: int = 7878, connections: int = 2, **options) -> "Pool":
        if connections < 1:
            raise ValueError("a pool needs at least one connection")
        clients: List[Client] = []
        try:
            for _ in range(connections):
                clients.append(await Client.connect(host, port, **options))
        except BaseException:
            for c in clients:
                await c.close()
            raise
        return cls(clients)

    def _least_busy(self) -> Client:
        return min(self.clients, key=lambda c: c.outstanding)

    async def score(self, *args, **kwargs) -> p.Result:
        return await self._least_busy().score(*args, **kwargs)

    async def score_many(self, requests: Iterable[p.ScoreRequest], in_flight: int = 64,
                         deadline: Optional[float] = None, return_exceptions: bool = False) -> List:
        """Scores prepared requests with at most `in_flight` outstanding over the pool; the answers come back in
        the requests' order. With `return_exceptions`, a refused request's place holds its exception instead of
        the whole batch failing."""
        requests = list(requests)
        results: List = [None] * len(requests)
        gate = asyncio.Semaphore(in_flight)

        async def one(i: int, r: p.ScoreRequest) -> None:
            async with gate:
                try:
                    results[i] = await self._least_busy().score_request(r, deadline=deadline)
                except ArbiterError as e:
                    if not return_exceptions:
                        raise
                    results[i] = e

        await asyncio.gather(*(one(i, r) for i, r in enumerate(requests)))
        return results

    async def close(self) -> None:
        for c in self.clients:
            await c.close()

    async def __aenter__(self) -> "Pool":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()


def _rows_are_dicts(candidates) -> bool:
    if hasattr(candidates, "shape"):
        return False
    try:
        first = next(iter(candidates))
    except (StopIteration, TypeError):
        return False
    return isinstance(first, Mapping)


def _vector(values, features: Optional[List[p.Feature]], what: str) -> List[float]:
    if isinstance(values, Mapping):
        if features is None:
            raise ValueError(f"{what}: features by name need the model's schema")
        names = [f.name for f in features]
        extra = [k for k in values if k not in names]
        if extra:
            raise ValueError(f"{what}: unknown feature {extra[0]!r}; the model takes {', '.join(names)}")
        out = []
        for f in features:
            if f.name not in values:
                raise ValueError(f"{what}: missing feature {f.name!r}" + (" (None for a missing value)" if f.missing else ""))
            v = values[f.name]
            out.append(math.nan if v is None else float(v))
        return out
    out = [math.nan if v is None else float(v) for v in values]
    if features is not None and len(out) != len(features):
        raise ValueError(f"{what}: {len(out)} values, the model takes {len(features)}: {', '.join(f.name for f in features)}")
    return out
