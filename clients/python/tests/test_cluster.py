"""The balancing client against three live arbiterd (this build's, as test_live starts them): spread, a dead
replica and one shutting down mid-load cost no request, the retry budget holds when nothing answers, and
membership and pins read from a real etcd (skipped, saying so, when etcd is not installed)."""

import asyncio
import base64
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import arbiter_client as ac  # noqa: E402
from arbiter_client import protocol as p  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
BIN = os.environ.get("ARBITER_BIN") or os.path.join(ROOT, ".build", "debug")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def request(i):
    lead = [i % 5, i % 12, 3.0 + i % 17, 0.01 * (i % 7), i % 30, i % 10]
    return p.ScoreRequest("leads", [3, 4200], [1000 + i], lead, 6)


def start_server(store):
    proc = subprocess.Popen([os.path.join(BIN, "arbiterd"), "--store", store, "--listen", "127.0.0.1:0", "--threads", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    log, found = [], threading.Event()

    def follow():
        for line in proc.stderr:
            log.append(line)
            if "listening on" in line:
                found.set()
    threading.Thread(target=follow, daemon=True).start()
    if not found.wait(60):
        proc.kill()
        raise RuntimeError("arbiterd did not start:\n" + "".join(log))
    return proc, int(re.search(r"listening on \S*:(\d+)", "".join(log)).group(1))


@unittest.skipUnless(os.path.exists(os.path.join(BIN, "arbiterd")), f"no arbiterd in {BIN} (build first, or set ARBITER_BIN)")
class ClusterClientTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="arbiter-python-cluster-")
        data, cls.store = os.path.join(cls.dir, "leads.csv"), os.path.join(cls.dir, "store")
        run = lambda *args: subprocess.run(args, check=True, capture_output=True, text=True, timeout=300)  # noqa: E731
        run(os.path.join(BIN, "arbiter-train"), "gen-data", "--kind", "lead-grading", "--rows", "2000", "--seed", "6", "--out", data)
        run(os.path.join(BIN, "arbiter-train"), "train", "--kind", "lead-grading", "--data", data, "--store", cls.store,
            "--model", "leads", "--max-epochs", "2")
        cls.servers = [start_server(cls.store) for _ in range(3)]

    @classmethod
    def tearDownClass(cls):
        for proc, _ in cls.servers:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            proc.stderr.close()
        shutil.rmtree(cls.dir, ignore_errors=True)

    def run_async(self, coroutine):
        return asyncio.run(asyncio.wait_for(coroutine, 120))

    def test_spread_and_a_dead_replica(self):
        async def go():
            addresses = [f"127.0.0.1:{port}" for _, port in self.servers] + [f"127.0.0.1:{free_port()}"]
            async with ac.BalancedClient(ac.StaticMembership(addresses)) as cluster:
                for i in range(300):
                    r = await cluster.score_request(request(i), deadline=5.0)
                    self.assertEqual(r.ids, [1000 + i])
                # By feature name, through the schema one replica gives.
                r = await cluster.score("leads", {"job_category": 3, "job_salary": 4200},
                                        [{"channel": 1, "city": 4, "distance_km": 3.5, "salary_gap": -0.05, "activity": 22,
                                          "experience_years": 9}], ids=[7])
                self.assertEqual(r.ids, [7])
                stats = cluster.statistics
                self.assertEqual(stats["failures"], 0)
                self.assertGreaterEqual(stats["retries"], 1, stats)
                self.assertEqual(len(stats["answered_by"]), 3, stats)
                self.assertTrue(all(n > 40 for n in stats["answered_by"].values()), stats)
        self.run_async(go())

    def test_a_replica_shutting_down_mid_load(self):
        async def go():
            proc, port = start_server(self.store)
            addresses = [f"127.0.0.1:{port}"] + [f"127.0.0.1:{q}" for _, q in self.servers[:2]]
            async with ac.BalancedClient(ac.StaticMembership(addresses), hedge_quantile=None) as cluster:
                async def worker(w):
                    for i in range(150):
                        await cluster.score_request(request(i + w), deadline=5.0)

                tasks = [asyncio.ensure_future(worker(w)) for w in range(4)]
                await asyncio.sleep(0.05)
                proc.terminate()
                await asyncio.gather(*tasks)
                self.assertEqual(cluster.statistics["failures"], 0, cluster.statistics)
                self.assertEqual(cluster.statistics["requests"], 600)
                self.assertGreater(cluster.statistics["retries"], 0, cluster.statistics)
            proc.wait(15)
            proc.stderr.close()
        self.run_async(go())

    def test_nothing_answers_and_the_budget_holds(self):
        async def go():
            dead = [f"127.0.0.1:{free_port()}" for _ in range(3)]
            cluster = ac.BalancedClient(ac.StaticMembership(dead), retry_budget_ratio=0.1, retry_budget_per_second=1)
            failed = 0
            started = time.monotonic()
            for i in range(50):
                try:
                    await cluster.score_request(request(i), deadline=2.0)
                except ac.ArbiterError:
                    failed += 1
            self.assertEqual(failed, 50)
            self.assertLessEqual(cluster.statistics["retries"], 5 + 1 + 2 * int(time.monotonic() - started + 1), cluster.statistics)
            self.assertGreater(cluster.statistics["budget_refusals"], 0)
            await cluster.close()
        self.run_async(go())

    @unittest.skipUnless(shutil.which("etcd"), "etcd is not installed (make deps installs etcd-server)")
    def test_membership_and_pins_from_etcd(self):
        client_port, peer_port = free_port(), free_port()
        url = f"http://127.0.0.1:{client_port}"
        etcd = subprocess.Popen(["etcd", "--data-dir", os.path.join(self.dir, "etcd"), "--listen-client-urls", url,
                                 "--advertise-client-urls", url, "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
                                 "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
                                 "--initial-cluster", f"default=http://127.0.0.1:{peer_port}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            def put(key, value):
                body = json.dumps({"key": base64.b64encode(key.encode()).decode(),
                                   "value": base64.b64encode(json.dumps(value).encode()).decode()}).encode()
                for _ in range(100):
                    try:
                        urllib.request.urlopen(urllib.request.Request(url + "/v3/kv/put", data=body), timeout=2).read()
                        return
                    except OSError:
                        time.sleep(0.1)
                raise RuntimeError("etcd did not answer")

            for k, (_, port) in enumerate(self.servers):
                put(f"/arbiter/replicas/r{k}", {"name": f"r{k}", "address": f"127.0.0.1:{port}", "ready": k != 2})
            put("/arbiter/models/leads/active", {"version": 1, "epoch": 1, "unixMicros": 0, "by": "test"})

            async def go():
                membership = ac.EtcdMembership([f"http://127.0.0.1:{free_port()}", url], interval=0.1)
                async with ac.BalancedClient(membership) as cluster:
                    # Only the ready replicas, and the committed version.
                    self.assertEqual(sorted(port for _, port in membership.replicas), sorted(q for _, q in self.servers[:2]))
                    self.assertEqual(membership.active, {"leads": 1})
                    r = await cluster.score_request(request(1))
                    self.assertEqual(r.version, 1)
                    # A committed version the replicas do not hold (their view is behind): answered unpinned.
                    put("/arbiter/models/leads/active", {"version": 9, "epoch": 2, "unixMicros": 0, "by": "test"})
                    await asyncio.sleep(0.4)
                    self.assertEqual(membership.active, {"leads": 9})
                    r = await cluster.score_request(request(2))
                    self.assertEqual(r.version, 1)
                    self.assertEqual(cluster.statistics["failures"], 0)
            self.run_async(go())
        finally:
            etcd.kill()
            etcd.wait()


if __name__ == "__main__":
    unittest.main()
