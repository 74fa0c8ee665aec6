"""Python client for Arbiter, the model-scoring server (protocol: proto-spec/PROTOCOL.md).

    import asyncio
    from arbiter_client import Client

    async def main():
        async with await Client.connect("127.0.0.1", 7878) as c:
            r = await c.score("leads", {"job_category": 3, "job_salary": 4200},
                              [{"channel": 1, "city": 4, "distance_km": 3.5, "salary_gap": -0.05,
                                "activity": 22, "experience_years": 9}], ids=[1001])
            print(r.rows())

    asyncio.run(main())

`BalancedClient` scores on a cluster of replicas (membership from etcd or a list; two random choices,
pins to the committed version, retries within a budget, hedges). `SyncClient` offers the same calls, blocking. Errors the server answers are raised as `ArbiterError`
subclasses named after their status (`UnknownModel`, `Overloaded`, `DeadlineExceeded`, ...).
"""

from .client import Client, Pool, zstd_available
from .cluster import BalancedClient, EtcdMembership, StaticMembership
from .errors import *  # noqa: F401,F403 - one class per status
from .errors import ArbiterError, ClientTimeout, ConnectionLost, error_for
from .protocol import (Column, ColumnSpec, Feature, HelloOK, ModelStatus, ModelSummary, ProtocolError, Reloaded,
                       Result, Schema, ScoreRequest)
from .sync import SyncClient

__version__ = "0.1.0"
