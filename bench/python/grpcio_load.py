#!/usr/bin/env python3
"""A stock gRPC client as a second opinion: grpcio's asyncio client drives a gRPC server open-loop and
records the run as arbiter-bench does, so that the gRPC peers' figures do not rest on the harness's own
HTTP/2 client alone.

It sends the very request bytes arbiter-bench sends (`arbiter-bench grpc-message` writes them), at a
constant rate spread round-robin over N channels (one HTTP/2 connection each), and appends one run record
per repeat to a JSON lines file that `arbiter-bench render` reads. Latency is measured from each request's
scheduled send time (coordinated omission corrected) and service time from the actual call; a request not
answered within the timeout is recorded at the timeout and counted as "timeout". The figures include
grpcio's own client cost (Python, its C core's threads) on the same machine: they bound the server's from
above; the harness's bound it more tightly.

    pip install grpcio==1.85.3     # the version bench/results were taken with
    arbiter-bench grpc-message --scenario gbdt-200 --model trees --out req.bin   # prints the method path
    bench/python/grpcio_load.py --port 7879 --method /arbiter.bench.v1.Scorer/Score --message req.bin \\
        --scenario gbdt-200 --label "grpc-swift (grpcio client)" --rate 500 --connections 4 --out runs.jsonl
"""
import argparse
import asyncio
import json
import math
import sys
import time

import grpc

def summary(values_ns):
    """p50/p90/p99/p99.9/max in µs, each the smallest recorded value at or above that share (as HdrHistogram)."""
    if not values_ns:
        return {"p50": 0, "p90": 0, "p99": 0, "p999": 0, "max": 0}
    v = sorted(values_ns)

    def at(p):
        return v[max(0, math.ceil(p / 100 * len(v)) - 1)] / 1000

    return {"p50": at(50), "p90": at(90), "p99": at(99), "p999": at(99.9), "max": v[-1] / 1000}


async def one_run(args, message, stubs, repeat):
    interval = 1 / args.rate
    total = int(args.rate * (args.warmup + args.duration))
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05
    measured_from = start + args.warmup
    measured_to = measured_from + args.duration
    latency, service, errors = [], [], {}
    answered_in_window = completed = 0
    timeout_s = args.timeout_ms / 1000

    async def call(i, due):
        nonlocal answered_in_window, completed
        sent = loop.time()
        error = None
        try:
            await stubs[i % len(stubs)](message, timeout=timeout_s)
        except grpc.aio.AioRpcError as e:
            error = "timeout" if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED else f"grpc: {e.code().name}"
        done = loop.time()
        if measured_from <= done < measured_to:
            answered_in_window += 1
        if due < measured_from:
            return
        if error == "timeout":
            # Recorded at the timeout, as the harness records an unanswered request.
            latency.append(args.timeout_ms * 1_000_000)
            service.append(args.timeout_ms * 1_000_000)
        elif error is None:
            completed += 1
            latency.append(int((done - due) * 1e9))
            service.append(int((done - sent) * 1e9))
        if error:
            errors[error] = errors.get(error, 0) + 1

    tasks = []
    for i in range(total):
        due = start + i * interval
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(call(i, due)))
    await asyncio.gather(*tasks)

    buckets = {}
    for x in latency:
        key = x // 1000 * 1000  # 1 µs buckets
        buckets[key] = buckets.get(key, 0) + 1
    return {
        "kind": "run", "repeatIndex": repeat, "wire": "grpc", "scenario": args.scenario, "target": args.scenario,
        "label": args.label, "rate": args.rate, "connections": args.connections,
        "inFlightPerConnection": 0, "poisson": False, "requestBytes": len(message),
        "durationSeconds": args.duration, "completed": completed,
        "achievedRate": answered_in_window / args.duration, "errors": errors,
        "latency": summary(latency), "service": summary(service),
        "histogram": [[k, c] for k, c in sorted(buckets.items())],
    }


async def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--method", required=True, help="the method's path, e.g. /arbiter.bench.v1.Scorer/Score")
    ap.add_argument("--message", required=True, help="file holding the serialized request (arbiter-bench grpc-message)")
    ap.add_argument("--scenario", required=True, help="the scenario's name, for the record")
    ap.add_argument("--label", required=True, help="the server's label in reports")
    ap.add_argument("--rate", type=float, required=True, help="requests per second, over all connections")
    ap.add_argument("--connections", type=int, default=1)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--timeout-ms", type=int, default=1000)
    ap.add_argument("--out", help="JSON lines file to append the runs to")
    args = ap.parse_args()
    for name, ok in [("--rate", args.rate > 0), ("--connections", 1 <= args.connections <= 1024),
                     ("--duration", args.duration > 0), ("--warmup", args.warmup >= 0),
                     ("--repeats", args.repeats >= 1), ("--timeout-ms", 1 <= args.timeout_ms <= 600_000)]:
        if not ok:
            sys.exit(f"grpcio_load: {name} is out of range")
    try:
        with open(args.message, "rb") as f:
            message = f.read()
    except OSError as e:
        sys.exit(f"grpcio_load: cannot read --message: {e}")

    target = f"{args.host}:{args.port}"
    # A local subchannel pool per channel: grpcio would otherwise share one connection among them.
    channels = [grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(args.connections)]
    # No serializers: the request goes out as the given bytes, the reply comes back as bytes.
    stubs = [c.unary_unary(args.method) for c in channels]
    try:
        for c, stub in zip(channels, stubs):
            await asyncio.wait_for(c.channel_ready(), timeout=10)
            await stub(message, timeout=10)  # one call first, as the harness's handshake makes
    except (asyncio.TimeoutError, grpc.aio.AioRpcError) as e:
        sys.exit(f"grpcio_load: {target} did not answer a first {args.method}: {e}")
    for r in range(args.repeats):
        record = await one_run(args, message, stubs, r)
        lat = record["latency"]
        print(f"{args.label} {args.scenario} {args.rate:g}/s x{args.connections}: p50 {lat['p50']:.1f} "
              f"p99 {lat['p99']:.1f} p99.9 {lat['p999']:.1f} us, {record['achievedRate']:.0f}/s, "
              f"errors {sum(record['errors'].values())}", flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps(record) + "\n")
    for c in channels:
        await c.close()


if __name__ == "__main__":
    asyncio.run(main())
