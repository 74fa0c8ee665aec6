"""A live round trip of every request type against an arbiterd these tests start (with a model arbiter-train
trains), over plain and pipelined connections, with zstd when the `zstandard` package is installed.

The binaries come from $ARBITER_BIN (a directory), else the package's debug build (.build/debug)."""

import asyncio
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import arbiter_client as ac  # noqa: E402
from arbiter_client import protocol as p  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
BIN = os.environ.get("ARBITER_BIN") or os.path.join(ROOT, ".build", "debug")
FEATURES = ["channel", "city", "distance_km", "salary_gap", "activity", "experience_years"]


def lead(i):
    return {"channel": i % 5, "city": i % 12, "distance_km": 3.0 + i % 17, "salary_gap": 0.01 * (i % 7),
            "activity": i % 30, "experience_years": i % 10}


@unittest.skipUnless(os.path.exists(os.path.join(BIN, "arbiterd")), f"no arbiterd in {BIN} (build first, or set ARBITER_BIN)")
class LiveTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="arbiter-python-")
        data, store, tokens = (os.path.join(cls.dir, n) for n in ("leads.csv", "store", "tokens"))
        run = lambda *args: subprocess.run(args, check=True, capture_output=True, text=True, timeout=300)  # noqa: E731
        run(os.path.join(BIN, "arbiter-train"), "gen-data", "--kind", "lead-grading", "--rows", "3000", "--seed", "4",
            "--out", data)
        run(os.path.join(BIN, "arbiter-train"), "train", "--kind", "lead-grading", "--data", data, "--store", store,
            "--model", "leads", "--max-epochs", "2")
        token = lambda rights, name: run(os.path.join(BIN, "arbiter"), "token", "--rights", rights, "--name", name,  # noqa: E731
                                         "--append-to", tokens).stdout.strip()
        cls.admin = token("admin", "py-admin")
        cls.info_only = token("info", "py-info")
        cls.server = subprocess.Popen([os.path.join(BIN, "arbiterd"), "--store", store, "--listen", "127.0.0.1:0",
                                       "--tokens", tokens, "--threads", "2"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        cls.log = []
        found = threading.Event()

        def follow():
            for line in cls.server.stderr:
                cls.log.append(line)
                if "listening on" in line:
                    found.set()
        threading.Thread(target=follow, daemon=True).start()
        if not found.wait(60):
            cls.server.kill()
            raise RuntimeError("arbiterd did not start:\n" + "".join(cls.log))
        cls.port = int(re.search(r"listening on \S*:(\d+)", "".join(cls.log)).group(1))

    @classmethod
    def tearDownClass(cls):
        cls.server.terminate()
        try:
            cls.server.wait(15)
        except subprocess.TimeoutExpired:
            cls.server.kill()
        shutil.rmtree(cls.dir, ignore_errors=True)

    def run_async(self, coroutine):
        return asyncio.run(asyncio.wait_for(coroutine, 120))

    async def connect(self, **options):
        options.setdefault("token", self.admin)
        return await ac.Client.connect("127.0.0.1", self.port, **options)

    def test_every_request_type(self):
        async def go():
            async with await self.connect(compression=False) as c:
                self.assertEqual(c.session.version, 1)
                self.assertGreater(await c.ping(b"abc"), 0)
                models = await c.models()
                self.assertEqual([(m.name, m.kind) for m in models], [("leads", "lead-grading")])
                schema = await c.info("leads")
                self.assertEqual([f.name for f in schema.context_features], ["job_category", "job_salary"])
                self.assertEqual([f.name for f in schema.candidate_features], FEATURES)
                self.assertEqual([o.name for o in schema.outputs], ["p_contact", "p_interview", "p_hire", "grade"])
                status = await c.status("leads")
                self.assertEqual(status[0].active, 1)
                self.assertEqual([v.roles for v in status[0].versions], [["active"]])
                reloaded = await c.reload()
                self.assertGreaterEqual(reloaded.generation, 1)
                self.assertEqual(reloaded.events, [])

                ctx = {"job_category": 3, "job_salary": 4200}
                r = await c.score("leads", ctx, [lead(i) for i in range(5)], ids=[100 + i for i in range(5)])
                self.assertEqual(r.version, 1)
                self.assertEqual(r.ids, [100, 101, 102, 103, 104])
                self.assertFalse(r.sorted)
                rows = r.rows()
                self.assertEqual(set(rows[0]), {"id", "score", "p_contact", "p_interview", "p_hire", "grade"})
                for row in rows:
                    # Cumulative stage probabilities; the score is p_hire.
                    self.assertTrue(0 <= row["p_hire"] <= row["p_interview"] <= row["p_contact"] <= 1, row)
                    self.assertEqual(row["score"], row["p_hire"])
                    self.assertIn(row["grade"], "ABCD")
                # The same numbers from rows in schema order, and the best two first with top_k.
                same = await c.score("leads", [3, 4200], [[lead(i)[f] for f in FEATURES] for i in range(5)],
                                     ids=[100 + i for i in range(5)], version=1)
                self.assertEqual(same.scores, r.scores)
                top = await c.score("leads", ctx, [lead(i) for i in range(5)], ids=list(range(5)), top_k=2)
                self.assertTrue(top.sorted)
                self.assertEqual(top.scores, sorted(r.scores, reverse=True)[:2])
                try:
                    import numpy as np
                except ImportError:
                    np = None
                if np is not None:
                    arr = np.array([[lead(i)[f] for f in FEATURES] for i in range(5)], dtype=np.float32)
                    viaNumpy = await c.score("leads", ctx, arr, ids=[100 + i for i in range(5)])
                    self.assertEqual(viaNumpy.scores, r.scores)
        self.run_async(go())

    def test_errors_are_typed_exceptions_carrying_the_status(self):
        async def go():
            async with await self.connect() as c:
                with self.assertRaises(ac.UnknownModel) as e:
                    await c.score("nope", [3, 4200], [[0] * 6], ids=[1])
                self.assertEqual((e.exception.status, e.exception.status_name), (7, "UNKNOWN_MODEL"))
                self.assertIn("nope", e.exception.message)
                self.assertFalse(e.exception.retryable)
                with self.assertRaises(ac.UnknownVersion):
                    await c.score("leads", [3, 4200], [[0] * 6], ids=[1], version=99)
                with self.assertRaises(ac.InvalidFeature) as e:
                    await c.score("leads", [3, 4200], [[0, 1, math.inf, 0, 1, 1]], ids=[1])
                self.assertIn("distance_km", e.exception.message)
                with self.assertRaises(ac.SchemaMismatch):
                    await c.score("leads", [3, 4200], [[0] * 5], ids=[1])
                with self.assertRaisesRegex(ValueError, "missing feature 'city'"):
                    await c.score("leads", {"job_category": 3, "job_salary": 4200}, [{"channel": 1}], ids=[1])
                with self.assertRaisesRegex(ValueError, "every candidate needs an id"):
                    await c.score("leads", [3, 4200], [[0] * 6, [0] * 6], ids=[1])
                # A budget too small to meet: refused by the server, or given up on here.
                with self.assertRaises((ac.DeadlineExceeded, ac.ClientTimeout)):
                    await c.score("leads", [3, 4200], [[0] * 6], ids=[1], deadline=1e-6)
                # The connection carries on after every one of them.
                self.assertEqual(len((await c.score("leads", [3, 4200], [[0] * 6], ids=[1])).ids), 1)
            async with await self.connect(token=self.info_only) as c:
                self.assertEqual(len(await c.models()), 1)
                with self.assertRaises(ac.Forbidden):
                    await c.score("leads", [3, 4200], [[0] * 6], ids=[1])
            with self.assertRaises(ac.Unauthenticated):
                await self.connect(token="arb_not-a-token")
        self.run_async(go())

    def test_pipelined_requests_over_a_pool_answer_each_request(self):
        async def go():
            requests = [p.ScoreRequest("leads", [i % 8, 3000 + i], list(range(i * 10, i * 10 + 1 + i % 4)),
                                       [v for j in range(1 + i % 4) for v in (lambda d: [d[f] for f in FEATURES])(lead(i + j))],
                                       6) for i in range(400)]
            async with await ac.Pool.connect("127.0.0.1", self.port, connections=2, token=self.admin) as pool:
                start = time.perf_counter()
                results = await pool.score_many(requests, in_flight=64)
                elapsed = time.perf_counter() - start
                self.assertEqual(len(results), 400)
                for k in (0, 133, 399):
                    alone = await pool.clients[0].score_request(requests[k])
                    self.assertEqual(results[k].ids, list(requests[k].candidate_ids))
                    self.assertEqual(results[k].scores, alone.scores)
                self.assertTrue(all(r.ids == list(q.candidate_ids) for r, q in zip(results, requests)))
                # Refusals in their places, the rest answered.
                mixed = requests[:3] + [p.ScoreRequest("nope", [1, 2], [1], [0] * 6, 6)] + requests[3:6]
                out = await pool.score_many(mixed, return_exceptions=True)
                self.assertIsInstance(out[3], ac.UnknownModel)
                self.assertEqual([r.ids for r in out[4:]], [list(q.candidate_ids) for q in requests[3:6]])
            print(f"\n  400 pipelined SCOREs over 2 connections in {elapsed * 1000:.0f} ms", file=sys.stderr)
        self.run_async(go())

    def test_zstd_when_installed(self):
        if not ac.zstd_available():
            self.skipTest("the zstandard package is not installed: zstd untested (pip install zstandard)")

        async def go():
            n = 3000  # a request and an answer well over the 4 KiB threshold
            cands = [[lead(i)[f] for f in FEATURES] for i in range(n)]
            async with await self.connect(compression=True) as z, await self.connect(compression=False) as plain:
                self.assertTrue(z.compressed)
                self.assertFalse(plain.compressed)
                a = await z.score("leads", [2, 3900], cands, ids=list(range(n)))
                b = await plain.score("leads", [2, 3900], cands, ids=list(range(n)))
                self.assertEqual(a.scores, b.scores)
                self.assertEqual(a.column("grade"), b.column("grade"))
        self.run_async(go())

    def test_sync_client(self):
        with ac.SyncClient("127.0.0.1", self.port, connections=2, token=self.admin) as c:
            self.assertEqual(c.models()[0].name, "leads")
            r = c.score("leads", {"job_category": 1, "job_salary": 3000}, [lead(1), lead(2)], ids=[7, 8])
            self.assertEqual(r.ids, [7, 8])
            many = c.score_many([p.ScoreRequest("leads", [1, 3000], [7, 8], [lead(1)[f] for f in FEATURES] +
                                                [lead(2)[f] for f in FEATURES], 6)] * 10)
            self.assertTrue(all(m.scores == r.scores for m in many))


if __name__ == "__main__":
    unittest.main()
