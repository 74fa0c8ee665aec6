#!/usr/bin/env python3
"""Misbehaving clients for the soak (bench/soak/run.sh): each kind keeps its connections open against
arbiterd for the whole run, reconnecting whenever the server closes one, and counts what happened.

  idle        connect, HELLO, then say nothing (the idle timeout closes them)
  half-frame  announce a 4 MiB SCORE and send all but its last byte, then stall (the frame timeout)
  zstd        negotiate zstd, pipeline compressed 10,000-lead SCOREs (a few KB each, ~250 KB answers) and
              never read (the memory budget, back-pressure, then the idle timeout)
  slow        pipeline 100-lead SCOREs and read the answers at 20 KB/s
  garbage     send bytes that are not the protocol (BAD_MAGIC, closed at once)

Frames are built with proto-spec/gen_vectors.py's encoders (written from the spec, not from the server).

    pip install zstandard==0.25.0
    bench/soak/abusers.py --port 7878 --seconds 600 --each 8
"""
import argparse
import json
import os
import random
import socket
import struct
import sys
import threading
import time

import zstandard

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "proto-spec"))
from gen_vectors import header, score_body, s16  # noqa: E402

MODEL = "leads"
CONTEXT = [3.0, 4200.0]


def leads(n):
    m = []
    for i in range(n):
        m += [float(i % 5), float(i % 12), float(2 + i % 40), (i % 7) * 0.05 - 0.1, float(i % 30), float(i % 15)]
    return m


def score_frame(request_id, n, compress=None):
    body = score_body({"model": MODEL, "version": 0, "routing_key": 0, "top_k": 0, "context": CONTEXT,
                       "candidate_ids": list(range(n)), "candidate_feature_count": 6, "candidate_features": leads(n)})
    flags = 0
    if compress:
        body = compress.compress(body)
        flags = 1
    return header("SCORE", request_id, len(body), flags=flags) + body


def hello(zstd=False):
    body = struct.pack("<HHII", 1, 1, 0, 1 if zstd else 0) + s16("soak-abuser")
    return header("HELLO", 1, len(body)) + body


class Counters:
    def __init__(self):
        self.lock = threading.Lock()
        self.values = {}

    def add(self, kind, what, n=1):
        with self.lock:
            k = self.values.setdefault(kind, {})
            k[what] = k.get(what, 0) + n


def connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_closed(s):
    """True once the server has closed the connection (end of stream or reset), reading what it sent."""
    try:
        s.settimeout(0.5)
        data = s.recv(65536)
        return data == b""
    except socket.timeout:
        return False
    except OSError:
        return True


def run_kind(kind, port, deadline, counters):
    frame_big = score_frame(2, 10_000, compress=zstandard.ZstdCompressor(level=3, write_content_size=True))
    frame_100 = score_frame(2, 100)
    while time.time() < deadline:
        try:
            s = connect(port)
        except OSError as e:
            counters.add(kind, f"connect failed: {e.__class__.__name__}")
            time.sleep(0.5)
            continue
        counters.add(kind, "connections")
        try:
            if kind == "garbage":
                s.sendall(bytes(random.getrandbits(8) for _ in range(64)))
                while not read_closed(s) and time.time() < deadline:
                    pass
                time.sleep(0.05)  # twenty new connections a second per thread
            elif kind == "idle":
                s.sendall(hello())
                while not read_closed(s) and time.time() < deadline:
                    pass
            elif kind == "half-frame":
                s.sendall(hello())
                body_len = (4 << 20) - 64
                s.sendall(header("SCORE", 3, body_len) + b"\0" * (body_len - 1))
                while not read_closed(s) and time.time() < deadline:
                    pass
            elif kind == "zstd":
                s.sendall(hello(zstd=True))
                s.settimeout(1.0)
                sent = 0
                while time.time() < deadline:
                    try:
                        s.sendall(frame_big)
                        sent += 1
                    except socket.timeout:
                        pass  # the server stopped reading: keep the pressure, never read
                    except OSError:
                        break
                counters.add(kind, "requests sent", sent)
            elif kind == "slow":
                s.sendall(hello())
                s.settimeout(1.0)
                while time.time() < deadline:
                    try:
                        s.sendall(frame_100 * 50)
                        got = s.recv(2048)  # ~20 KB/s with the sleep
                        if got == b"":
                            break
                        time.sleep(0.1)
                    except socket.timeout:
                        pass
                    except OSError:
                        break
        except OSError as e:
            counters.add(kind, f"error: {e.__class__.__name__}")
        finally:
            counters.add(kind, "closed")
            s.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--each", type=int, default=8, help="connections of each kind")
    ap.add_argument("--kinds", default="idle,half-frame,zstd,slow,garbage")
    ap.add_argument("--out", help="write the counts as JSON here")
    args = ap.parse_args()
    deadline = time.time() + args.seconds
    counters = Counters()
    threads = [threading.Thread(target=run_kind, args=(k, args.port, deadline, counters), daemon=True)
               for k in args.kinds.split(",") for _ in range(args.each)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(1, deadline - time.time() + 30))
    print(json.dumps(counters.values, indent=2, sort_keys=True))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(counters.values, f, indent=2, sort_keys=True)


if __name__ == "__main__":
    main()
