"""A blocking face on the asyncio client, for scripts and notebooks: it runs its own event loop on a thread."""

from __future__ import annotations

import asyncio
import threading
from typing import Iterable, List, Optional

from . import protocol as p
from .client import Pool


class SyncClient:
    """`SyncClient("127.0.0.1", 7878)`: every method of `Client`, blocking; `connections` > 1 spreads
    `score_many` (and concurrent callers) over that many connections."""

    def __init__(self, host: str = "127.0.0.1", port: int = 7878, *, connections: int = 1, **options):
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="arbiter-client", daemon=True)
        self._thread.start()
        try:
            self._pool = self._call(Pool.connect(host, port, connections, **options))
        except BaseException:
            self._stop()
            raise

    def _call(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    @property
    def session(self) -> p.HelloOK:
        return self._pool.clients[0].session

    def ping(self, payload: bytes = b"", deadline: Optional[float] = 5.0) -> float:
        return self._call(self._pool.clients[0].ping(payload, deadline))

    def models(self, deadline: Optional[float] = 5.0) -> List[p.ModelSummary]:
        return self._call(self._pool.clients[0].models(deadline))

    def info(self, model: str, version: int = 0, deadline: Optional[float] = 5.0) -> p.Schema:
        return self._call(self._pool.clients[0].info(model, version, deadline))

    def status(self, model: str = "", deadline: Optional[float] = 5.0) -> List[p.ModelStatus]:
        return self._call(self._pool.clients[0].status(model, deadline))

    def reload(self, deadline: Optional[float] = 60.0) -> p.Reloaded:
        return self._call(self._pool.clients[0].reload(deadline))

    def score(self, model, context, candidates, ids, **options) -> p.Result:
        return self._call(self._pool.score(model, context, candidates, ids, **options))

    def score_many(self, requests: Iterable[p.ScoreRequest], in_flight: int = 64, deadline: Optional[float] = None,
                   return_exceptions: bool = False) -> List:
        return self._call(self._pool.score_many(requests, in_flight, deadline, return_exceptions))

    def close(self) -> None:
        try:
            self._call(self._pool.close())
        finally:
            self._stop()

    def _stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def __enter__(self) -> "SyncClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
