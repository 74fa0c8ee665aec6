"""A client of a cluster of arbiterd replicas (docs/CLUSTER.md), as the Swift `BalancedClient`:

- each SCORE goes to the less loaded of two replicas drawn at random (fewest outstanding requests);
- it is pinned to the version the cluster last committed (from etcd), so no answer comes from a version the
  cluster has not committed; a replica that does not hold the pin answers UNKNOWN_VERSION and the request goes
  elsewhere unpinned (any replica's active version is a committed one);
- a connect failure, a lost connection, OVERLOADED, SHUTTING_DOWN or TOO_MANY_CONNECTIONS sends it again to
  another replica, within a retry budget (20% of requests plus 10 a second);
- one still unanswered after the model's recent p95 is hedged to a second replica; the first answer wins;
- the caller's deadline is carried: each attempt gets what is left of it.

    membership = EtcdMembership(["http://127.0.0.1:2379"])      # or StaticMembership(["10.0.0.5:7878", ...])
    async with BalancedClient(membership) as cluster:
        r = await cluster.score("leads", context, candidates, ids=[1, 2, 3], deadline=0.05)

`EtcdMembership` reads the control plane through etcd's JSON gateway (standard library only) every
`interval` seconds (0.25 by default); with etcd out of reach it keeps the last view.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import time
import urllib.request
from typing import Dict, List, Optional, Sequence, Tuple

from . import protocol as p
from .client import Client
from .errors import ArbiterError, ClientTimeout, ConnectionLost

_REPLICA_TROUBLE = {"SHUTTING_DOWN", "TOO_MANY_CONNECTIONS", "CONNECTION_LOST"}
_BUSY = {"OVERLOADED", "INTERNAL_ERROR"}


def _address(address: str) -> Tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"replica address {address!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


class StaticMembership:
    """A fixed list of replicas ("HOST:PORT"); requests are not pinned."""

    def __init__(self, addresses: Sequence[str]):
        self.replicas = [_address(a) for a in addresses]
        self.active: Dict[str, int] = {}

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass


class EtcdMembership:
    """The ready replicas and each model's committed version, from etcd (members' client URLs)."""

    def __init__(self, endpoints: Sequence[str], prefix: str = "/arbiter/", interval: float = 0.25, timeout: float = 2.0):
        if not endpoints:
            raise ValueError("no etcd endpoint given")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self.prefix = prefix
        self.interval = interval
        self.timeout = timeout
        self.replicas: List[Tuple[str, int]] = []
        self.active: Dict[str, int] = {}
        self.names: Dict[Tuple[str, int], str] = {}
        self._task: Optional[asyncio.Task] = None
        self.last_error: Optional[str] = None

    def _range(self) -> list:
        key = self.prefix.encode()
        end = key[:-1] + bytes([key[-1] + 1])
        body = json.dumps({"key": base64.b64encode(key).decode(), "range_end": base64.b64encode(end).decode()}).encode()
        errors = []
        for endpoint in self.endpoints:
            try:
                request = urllib.request.Request(endpoint + "/v3/kv/range", data=body, headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                    return json.loads(answer.read()).get("kvs", [])
            except Exception as e:  # noqa: BLE001 - the next member may answer
                errors.append(f"{endpoint}: {e}")
        raise ConnectionError("etcd: " + "; ".join(errors))

    def apply(self, kvs: list) -> None:
        replicas, names, active = [], {}, {}
        models = self.prefix + "models/"
        for kv in kvs:
            key = base64.b64decode(kv["key"]).decode()
            value = json.loads(base64.b64decode(kv.get("value", "")) or b"null")
            if key.startswith(self.prefix + "replicas/") and isinstance(value, dict) and value.get("ready"):
                try:
                    address = _address(value["address"])
                except (KeyError, ValueError):
                    continue
                replicas.append(address)
                names[address] = value.get("name", value["address"])
            elif key.startswith(models) and key.endswith("/active") and isinstance(value, dict):
                active[key[len(models):-len("/active")]] = int(value["version"])
        self.replicas, self.names, self.active = sorted(replicas), names, active

    async def refresh(self) -> None:
        self.apply(await asyncio.to_thread(self._range))

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.refresh()
                self.last_error = None
            except Exception as e:  # noqa: BLE001 - keep the last view
                self.last_error = str(e)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass


class BalancedClient:
    """Scores on a cluster: two random choices, pins, retries within a budget, hedges, deadlines carried."""

    def __init__(self, membership, *, retry_budget_ratio: float = 0.2, retry_budget_per_second: float = 10.0,
                 max_attempts: int = 3, hedge_quantile: Optional[float] = 0.95, hedge_after: int = 200,
                 pin_to_committed: bool = True, ejection: float = 1.0, **connect_options):
        self.membership = membership
        self.retry_budget_ratio = retry_budget_ratio
        self.retry_budget_per_second = retry_budget_per_second
        self.max_attempts = max_attempts
        self.hedge_quantile = hedge_quantile
        self.hedge_after = hedge_after
        self.pin_to_committed = pin_to_committed
        self.ejection = ejection
        self.connect_options = connect_options
        self._clients: Dict[Tuple[str, int], Client] = {}
        self._connecting: Dict[Tuple[str, int], asyncio.Future] = {}
        self._outstanding: Dict[Tuple[str, int], int] = {}
        self._ejected: Dict[Tuple[str, int], float] = {}
        self._budget = retry_budget_per_second
        self._refilled = time.monotonic()
        self._latencies: Dict[str, List[float]] = {}
        self._seen: Dict[str, int] = {}
        self._quantiles: Dict[str, float] = {}
        self.statistics = {"requests": 0, "retries": 0, "hedges": 0, "hedge_wins": 0, "failures": 0, "budget_refusals": 0,
                           "answered_by": {}}
        self._started = False

    async def __aenter__(self) -> "BalancedClient":
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def start(self) -> None:
        if not self._started:
            await self.membership.start()
            self._started = True

    async def close(self) -> None:
        await self.membership.stop()
        for c in list(self._clients.values()):
            await c.close()
        self._clients.clear()

    # -- scoring -------------------------------------------------------------------------------------------

    async def score(self, model: str, context, candidates, ids, *, top_k: int = 0, version: int = 0,
                    routing_key: int = 0, subject: Optional[int] = None, deadline: float = 1.0) -> p.Result:
        """As `Client.score`, on the cluster."""
        await self.start()
        builder = await self._any_client()
        request = await builder.build_request(model, context, candidates, ids, top_k=top_k, version=version,
                                              routing_key=routing_key, subject=subject)
        return await self.score_request(request, deadline=deadline)

    async def score_request(self, request: p.ScoreRequest, deadline: float = 1.0) -> p.Result:
        await self.start()
        self.statistics["requests"] += 1
        self._budget = min(self._budget + self.retry_budget_ratio, max(10.0, self.retry_budget_per_second * 10))
        pinned = False
        if self.pin_to_committed and request.version == 0 and request.model in self.membership.active:
            request = p.ScoreRequest(**{**request.__dict__, "version": self.membership.active[request.model]})
            pinned = True
        loop = asyncio.get_running_loop()
        started = loop.time()
        end = started + deadline
        tried: set = set()
        attempts: Dict[asyncio.Task, Tuple[str, int]] = {}
        first: Optional[Tuple[str, int]] = None
        last_error: Optional[BaseException] = None
        hedge_at = self._hedge_delay(request.model)
        hedged = False

        def launch() -> bool:
            nonlocal first
            replica = self._pick(tried)
            if replica is None:
                return False
            tried.add(replica)
            first = first or replica
            attempts[asyncio.ensure_future(self._attempt(replica, request, end))] = replica
            return True

        if not launch():
            self.statistics["failures"] += 1
            raise ConnectionLost("no replica is ready to take requests")
        try:
            while attempts:
                timeout = None
                if hedge_at is not None and not hedged and len(attempts) == 1:
                    timeout = max(0.0, started + hedge_at - loop.time())
                done, _ = await asyncio.wait(list(attempts), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                if not done:
                    hedged = True
                    if len(tried) < self.max_attempts and self._take_budget() and launch():
                        self.statistics["hedges"] += 1
                    continue
                for task in done:
                    replica = attempts.pop(task)
                    try:
                        result = task.result()
                    except ArbiterError as e:
                        last_error = e
                        kind = self._classify(e)
                        if kind == "replica":
                            self._eject(replica)
                        if kind == "version" and pinned:
                            request = p.ScoreRequest(**{**request.__dict__, "version": 0})
                        if kind == "final":
                            if not attempts:
                                raise
                            continue
                        # Replaced even while another attempt is out: that one may be on a replica that stopped
                        # answering.
                        if len(tried) < self.max_attempts and loop.time() < end and self._take_budget() and launch():
                            self.statistics["retries"] += 1
                            continue
                        if not attempts:
                            raise
                        continue
                    self._record(request.model, loop.time() - started)
                    if replica != first:
                        self.statistics["hedge_wins"] += 1
                    name = getattr(self.membership, "names", {}).get(replica, f"{replica[0]}:{replica[1]}")
                    self.statistics["answered_by"][name] = self.statistics["answered_by"].get(name, 0) + 1
                    return result
            raise last_error or ConnectionLost("no attempt answered")
        except BaseException:
            self.statistics["failures"] += 1
            raise
        finally:
            for task in attempts:
                task.cancel()

    async def _attempt(self, replica: Tuple[str, int], request: p.ScoreRequest, end: float) -> p.Result:
        self._outstanding[replica] = self._outstanding.get(replica, 0) + 1
        try:
            remaining = end - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise ClientTimeout("the deadline passed before this attempt")
            try:
                client = await asyncio.wait_for(self._connection(replica), remaining)
            except asyncio.TimeoutError:
                raise ClientTimeout("connecting took the whole deadline") from None
            except (OSError, ConnectionError) as e:
                raise ConnectionLost(f"cannot connect to {replica[0]}:{replica[1]}: {e}") from None
            return await client.score_request(request, deadline=max(0.001, end - asyncio.get_running_loop().time()))
        finally:
            self._outstanding[replica] -= 1

    @staticmethod
    def _classify(e: ArbiterError) -> str:
        name = getattr(e, "status_name", "")
        if name in _REPLICA_TROUBLE:
            return "replica"
        if name in _BUSY:
            return "busy"
        if name == "UNKNOWN_VERSION":
            return "version"
        return "final"

    # -- replicas ------------------------------------------------------------------------------------------

    def _pick(self, tried: set) -> Optional[Tuple[str, int]]:
        now = time.monotonic()
        candidates = [r for r in self.membership.replicas if r not in tried and self._ejected.get(r, 0) <= now]
        if not candidates:
            candidates = [r for r in self.membership.replicas if r not in tried]
        if not candidates:
            return None
        if len(candidates) == 1:
            return candidates[0]
        a, b = random.sample(candidates, 2)
        return b if self._outstanding.get(b, 0) < self._outstanding.get(a, 0) else a

    def _eject(self, replica: Tuple[str, int]) -> None:
        self._ejected[replica] = time.monotonic() + self.ejection
        client = self._clients.pop(replica, None)
        if client is not None:
            asyncio.ensure_future(client.close())

    async def _connection(self, replica: Tuple[str, int]) -> Client:
        client = self._clients.get(replica)
        if client is not None and client._closed is None:
            return client
        pending = self._connecting.get(replica)
        if pending is None:
            pending = asyncio.ensure_future(Client.connect(replica[0], replica[1], **self.connect_options))
            self._connecting[replica] = pending
            try:
                self._clients[replica] = await pending
            finally:
                self._connecting.pop(replica, None)
            return self._clients[replica]
        return await asyncio.shield(pending)

    async def _any_client(self) -> Client:
        errors = []
        for replica in random.sample(self.membership.replicas, len(self.membership.replicas)):
            try:
                return await self._connection(replica)
            except (OSError, ConnectionError, ArbiterError) as e:
                errors.append(f"{replica[0]}:{replica[1]}: {e}")
                self._eject(replica)
        raise ConnectionLost("no replica reachable: " + "; ".join(errors) if errors else "no replica is ready")

    # -- budget and hedging --------------------------------------------------------------------------------

    def _take_budget(self) -> bool:
        now = time.monotonic()
        self._budget = min(self._budget + (now - self._refilled) * self.retry_budget_per_second,
                           max(10.0, self.retry_budget_per_second * 10))
        self._refilled = now
        if self._budget < 1:
            self.statistics["budget_refusals"] += 1
            return False
        self._budget -= 1
        return True

    def _record(self, model: str, seconds: float) -> None:
        window = self._latencies.setdefault(model, [])
        if len(window) >= 1000:
            window[self._seen.get(model, 0) % 1000] = seconds
        else:
            window.append(seconds)
        self._seen[model] = self._seen.get(model, 0) + 1
        if self._seen[model] % 100 == 0:
            self._quantiles.pop(model, None)

    def _hedge_delay(self, model: str) -> Optional[float]:
        if self.hedge_quantile is None or self._seen.get(model, 0) < self.hedge_after:
            return None
        q = self._quantiles.get(model)
        if q is None:
            window = sorted(self._latencies[model])
            q = window[min(len(window) - 1, int(len(window) * self.hedge_quantile))]
            self._quantiles[model] = q
        return q
