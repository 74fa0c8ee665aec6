"""Every golden vector of proto-spec/vectors: decoded to the fields its JSON names, and encoded back byte for byte."""

import dataclasses
import glob
import json
import math
import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from arbiter_client import protocol as p  # noqa: E402
from arbiter_client.errors import error_for  # noqa: E402

VECTORS = os.path.join(os.path.dirname(__file__), "..", "..", "..", "proto-spec", "vectors")


def read(path):
    with open(path) as f:
        return f.read()


def vector_form(message):
    """A decoded message in the vectors' JSON layout."""
    if isinstance(message, (p.Ping, p.Pong)):
        return {"payload_hex": message.payload.hex()}

    def clean(x):
        if isinstance(x, dict):
            out = {}
            for k, v in x.items():
                if k == "token" and v is None or k == "subject_id" and v is None or k == "shadow" and v is None:
                    continue
                if k == "missing" and v is False:
                    continue
                out[k] = clean(v)
            return out
        if isinstance(x, list):
            return [clean(v) for v in x]
        if isinstance(x, float) and math.isnan(x):
            return "nan"
        return x

    return clean(dataclasses.asdict(message))


class VectorTests(unittest.TestCase):
    def test_every_vector_decodes_and_encodes_back(self):
        names = sorted(glob.glob(os.path.join(VECTORS, "*.json")))
        self.assertGreater(len(names), 40, f"the vectors are missing from {VECTORS}")
        opcodes_seen, statuses_seen = set(), set()
        for path in names:
            name = os.path.basename(path)[:-5]
            with self.subTest(vector=name):
                doc = json.loads(read(path))
                frame = bytes.fromhex("".join(read(path[:-5] + ".hex").split()))
                header = p.Header.unpack(frame[:p.HEADER_SIZE])
                want = doc["header"]
                self.assertEqual(p.OPCODE_NAMES[header.opcode], want["opcode"])
                self.assertEqual(p.STATUSES[header.status][0], want["status"])
                self.assertEqual((header.request_id, header.body_length, header.send_stamp, header.time, header.flags),
                                 (want["request_id"], want["body_length"], want["send_stamp"], want["time"], want["flags"]))
                body = frame[p.HEADER_SIZE:]
                self.assertEqual(len(body), header.body_length)
                message = p.decode_body(header.opcode, body)
                self.assertEqual(vector_form(message), doc["message"])
                again = p.encode_frame(message, header.request_id, send_stamp=header.send_stamp, time=header.time,
                                       status=header.status)
                self.assertEqual(again.hex(), frame.hex())
                opcodes_seen.add(want["opcode"])
                statuses_seen.add(want["status"])
                if want["opcode"] == "ERROR":
                    e = error_for(header.status, message.message, header.request_id)
                    self.assertEqual(e.status_name, want["status"])
                    self.assertEqual(e.message, message.message)
        self.assertEqual(opcodes_seen, set(p.OPCODES), "a vector for every opcode")
        self.assertEqual(statuses_seen, {n for n, _, _ in p.STATUSES.values()}, "an ERROR vector for every status")

    def test_bad_frames_are_refused_with_the_problem(self):
        frame = bytes.fromhex("".join(read(os.path.join(VECTORS, "result.hex")).split()))
        with self.assertRaisesRegex(p.ProtocolError, "not b'ARBT'"):
            p.Header.unpack(b"HTTP" + frame[4:p.HEADER_SIZE])
        with self.assertRaisesRegex(p.ProtocolError, "ends .* bytes early"):
            p.decode_body(p.OPCODES["RESULT"], frame[p.HEADER_SIZE:-5])
        with self.assertRaisesRegex(p.ProtocolError, "bytes after its last field"):
            p.decode_body(p.OPCODES["RESULT"], frame[p.HEADER_SIZE:] + b"\x00\x00\x00\x00")

    def test_a_score_from_numpy_is_the_same_bytes(self):
        try:
            import numpy as np
        except ImportError:
            self.skipTest("numpy is not installed (optional)")
        plain = p.ScoreRequest("leads", [3.0, 4200.0], [101, 102], [1.0, 3.5, 4.0, 40.0], 2, 0, 42)
        arrays = p.ScoreRequest("leads", np.array([3, 4200], dtype=np.float64), np.array([101, 102]),
                                np.array([[1.0, 3.5], [4.0, 40.0]]), 2, 0, 42)
        self.assertEqual(p.encode_body(plain), p.encode_body(arrays))


if __name__ == "__main__":
    unittest.main()
