#!/usr/bin/env python3
"""Writes the golden vectors of protocol v1 from PROTOCOL.md alone, with struct.pack: an implementation
independent of the Swift codec. Each vector is NAME.hex (the frame, hex, 32 bytes a line) and NAME.json (its
decoding). Run from this folder: python3 gen_vectors.py
"""
import json
import os
import struct

MAGIC = b"ARBT"
OPCODES = {"HELLO": 0x01, "PING": 0x02, "LIST_MODELS": 0x03, "MODEL_INFO": 0x04, "SCORE": 0x05,
           "MODEL_STATUS": 0x06, "RELOAD": 0x07,
           "HELLO_OK": 0x81, "PONG": 0x82, "MODELS": 0x83, "SCHEMA": 0x84, "RESULT": 0x85,
           "STATUS": 0x86, "RELOADED": 0x87, "ERROR": 0xFF}
ROLES = {"active": 1, "split": 2, "shadow": 4}
OUTCOMES = {"loaded": 1, "rejected": 2, "unloaded": 3}
STATUSES = ["OK", "BAD_MAGIC", "UNSUPPORTED_VERSION", "FRAME_TOO_LARGE", "UNKNOWN_OPCODE", "MALFORMED",
            "HELLO_REQUIRED", "UNKNOWN_MODEL", "UNKNOWN_VERSION", "SCHEMA_MISMATCH", "TOO_MANY_CANDIDATES",
            "INVALID_FEATURE", "COMPRESSION_NOT_NEGOTIATED", "BAD_COMPRESSION", "OVERLOADED", "DEADLINE_EXCEEDED",
            "SHUTTING_DOWN", "INTERNAL", "PROTOCOL_VIOLATION", "TIMEOUT", "TOO_MANY_CONNECTIONS",
            "UNAUTHENTICATED", "FORBIDDEN", "INVALID_REQUEST"]
SCORE_SUBJECT = 0x0001


def s16(text):
    b = text.encode("utf-8")
    return struct.pack("<H", len(b)) + b


def pad(buf, align):
    return buf + b"\0" * ((align - len(buf) % align) % align)


def header(opcode, request_id, body_len, time=0, flags=0, status=0, version=1, send_stamp=0):
    return MAGIC + struct.pack("<BBBBQIIQ", version, OPCODES[opcode], flags, status, request_id, body_len, send_stamp, time)


def f32s(values):
    # JSON has no NaN: the vectors write a missing value as the string "nan" (quiet NaN, 0x7fc00000).
    return b"".join(struct.pack("<f", float("nan") if v == "nan" else v) for v in values)


def score_body(m):
    name = m["model"].encode()
    flags = SCORE_SUBJECT if "subject_id" in m else 0
    b = struct.pack("<QQIIIIHH", m["version"], m["routing_key"], m["top_k"], len(m["context"]),
                    len(m["candidate_ids"]), m["candidate_feature_count"], flags, len(name)) + name
    b = pad(b, 8)
    if "subject_id" in m:
        b += struct.pack("<Q", m["subject_id"])
    b += f32s(m["context"])
    b = pad(b, 8) + b"".join(struct.pack("<Q", i) for i in m["candidate_ids"])
    return b + f32s(m["candidate_features"])


def result_body(m):
    rows = len(m["ids"])
    b = struct.pack("<QIIIHH", m["version"], m["queue_us"], m["compute_us"], rows, len(m["columns"]),
                    1 if m["sorted"] else 0)
    b += b"".join(struct.pack("<Q", i) for i in m["ids"]) + f32s(m["scores"])
    for c in m["columns"]:
        kind = {"float32": 1, "code": 2}[c["kind"]]
        p = struct.pack("<BB", kind, len(c["labels"])) + s16(c["name"]) + b"".join(s16(l) for l in c["labels"])
        b += pad(p, 4)
        if kind == 1:
            b += f32s(c["values"])
        else:
            b += pad(bytes(c["values"]), 4)
    return b


def schema_body(m):
    b = struct.pack("<QQ", m["version"], m["created_unix_ms"]) + s16(m["model"]) + s16(m["kind"])
    for key in ("context_features", "candidate_features"):
        b += struct.pack("<H", len(m[key]))
        for f in m[key]:
            kind = {"numeric": 0, "categorical": 1}[f["kind"]] | (0x80 if f.get("missing") else 0)
            b += struct.pack("<BI", kind, f["cardinality"]) + s16(f["name"])
    b += struct.pack("<H", len(m["outputs"]))
    for c in m["outputs"]:
        b += struct.pack("<BB", {"float32": 1, "code": 2}[c["kind"]], len(c["labels"])) + s16(c["name"])
        b += b"".join(s16(l) for l in c["labels"])
    return b


def body_of(opcode, m):
    if opcode == "HELLO":
        body = struct.pack("<HHII", m["min_version"], m["max_version"], m["max_frame_bytes"], m["compression"]) + s16(m["client_name"])
        return body + (s16(m["token"]) if "token" in m else b"")
    if opcode == "HELLO_OK":
        return struct.pack("<HHIIII", m["version"], 0, m["max_frame_bytes"], m["max_candidates"], m["max_in_flight"],
                           m["compression"]) + s16(m["server_name"])
    if opcode in ("PING", "PONG"):
        return bytes.fromhex(m["payload_hex"])
    if opcode == "LIST_MODELS":
        return b""
    if opcode == "MODELS":
        b = struct.pack("<I", len(m["models"]))
        for e in m["models"]:
            b += struct.pack("<QHH", e["version"], e["context_feature_count"], e["candidate_feature_count"])
            b += s16(e["name"]) + s16(e["kind"])
        return b
    if opcode == "MODEL_INFO":
        return struct.pack("<Q", m["version"]) + s16(m["model"])
    if opcode == "SCHEMA":
        return schema_body(m)
    if opcode == "SCORE":
        return score_body(m)
    if opcode == "RESULT":
        return result_body(m)
    if opcode == "ERROR":
        return s16(m["message"])
    if opcode == "MODEL_STATUS":
        return s16(m["model"])
    if opcode == "STATUS":
        return status_body(m)
    if opcode == "RELOAD":
        return b""
    if opcode == "RELOADED":
        b = struct.pack("<QI", m["generation"], len(m["events"]))
        for e in m["events"]:
            b += struct.pack("<QB", e["version"], OUTCOMES[e["outcome"]]) + s16(e["model"]) + s16(e["detail"])
        return b
    raise ValueError(opcode)


def status_body(m):
    b = struct.pack("<I", len(m["models"]))
    for e in m["models"]:
        b += struct.pack("<QQ", e["active"], e["latest"]) + s16(e["name"]) + s16(e["kind"]) + s16(e["failure"])
        b += struct.pack("<H", len(e["versions"]))
        for v in e["versions"]:
            roles = sum(ROLES[r] for r in v["roles"])
            b += struct.pack("<QBBHf", v["version"], roles, 0, 0, v["split_weight"])
        b += struct.pack("<H", len(e["rejected"]))
        for r in e["rejected"]:
            b += struct.pack("<Q", r["version"]) + s16(r["reason"])
        shadow = e.get("shadow")
        if shadow is None:
            b += b"\x00"
            continue
        b += b"\x01" + struct.pack("<QfH", shadow["version"], shadow["sample"], len(shadow["comparisons"]))
        for c in shadow["comparisons"]:
            b += struct.pack("<QQQddQd", c["served"], c["requests"], c["rows"], c["mean_abs_difference"],
                             c["max_abs_difference"], c["ranked_requests"], c["mean_rank_correlation"])
            b += struct.pack("<QQQQ", c["code_rows"], c["changed_codes"], c["dropped"], c["failed"]) + s16(c["code_column"])
    return b


def write(name, description, opcode, request_id, message, time=0, status="OK", send_stamp=0):
    body = body_of(opcode, message)
    frame = header(opcode, request_id, len(body), time=time, status=STATUSES.index(status), send_stamp=send_stamp) + body
    hexlines = "\n".join(frame[i:i + 32].hex() for i in range(0, len(frame), 32))
    with open(os.path.join("vectors", name + ".hex"), "w") as f:
        f.write(hexlines + "\n")
    doc = {"description": description,
           "header": {"version": 1, "opcode": opcode, "flags": 0, "status": status, "request_id": request_id,
                      "body_length": len(body), "send_stamp": send_stamp, "time": time},
           "message": message}
    with open(os.path.join("vectors", name + ".json"), "w") as f:
        json.dump(doc, f, indent=2, sort_keys=True)
        f.write("\n")


LEAD_SCHEMA = {
    "model": "leads", "kind": "lead-grading", "version": 3, "created_unix_ms": 1795000000000,
    "context_features": [{"name": "job_category", "kind": "categorical", "cardinality": 8},
                         {"name": "job_salary", "kind": "numeric", "cardinality": 0}],
    "candidate_features": [{"name": "channel", "kind": "categorical", "cardinality": 5},
                           {"name": "distance_km", "kind": "numeric", "cardinality": 0}],
    "outputs": [{"name": "p_hire", "kind": "float32", "labels": []},
                {"name": "grade", "kind": "code", "labels": ["A", "B", "C", "D"]}],
}


GBDT_SCHEMA = {
    "model": "approvals", "kind": "gbdt", "version": 2, "created_unix_ms": 1795000000000,
    "context_features": [{"name": "region", "kind": "categorical", "cardinality": 4},
                         {"name": "income", "kind": "numeric", "cardinality": 0, "missing": True}],
    "candidate_features": [{"name": "utilization", "kind": "numeric", "cardinality": 0, "missing": True}],
    "outputs": [],
}


def main():
    os.makedirs("vectors", exist_ok=True)
    write("hello", "HELLO offering protocol 1 and zstd", "HELLO", 1,
          {"min_version": 1, "max_version": 1, "max_frame_bytes": 1048576, "compression": 1, "client_name": "example"})
    write("hello_token", "HELLO carrying an access token (the optional field after client_name)", "HELLO", 1,
          {"min_version": 1, "max_version": 1, "max_frame_bytes": 0, "compression": 0, "client_name": "pricing-svc",
           "token": "arb_3q2-7wEAAAAb8ZQ1sTjLrXy0vH4mKpNc"})
    write("hello_ok", "HELLO_OK settling v1, default limits, zstd", "HELLO_OK", 1,
          {"version": 1, "max_frame_bytes": 4194304, "max_candidates": 10000, "max_in_flight": 1024,
           "compression": 1, "server_name": "arbiterd/0.1"})
    write("ping", "PING with a 4-byte payload", "PING", 2, {"payload_hex": "01020304"})
    write("pong", "PONG echoing the payload; time is the server's 3 µs", "PONG", 2, {"payload_hex": "01020304"}, time=3)
    write("ping_empty", "PING with no payload", "PING", 9, {"payload_hex": ""})
    write("list_models", "LIST_MODELS", "LIST_MODELS", 3, {})
    write("models", "MODELS with one lead-grading model", "MODELS", 3,
          {"models": [{"name": "leads", "kind": "lead-grading", "version": 3, "context_feature_count": 2,
                       "candidate_feature_count": 6}]})
    write("model_info", "MODEL_INFO for the active version", "MODEL_INFO", 4, {"model": "leads", "version": 0})
    write("model_status", "MODEL_STATUS for every model (empty name)", "MODEL_STATUS", 13, {"model": ""})
    write("status", "STATUS: a 90/10 split of v7 and v8, v6 retained, v9 in the shadow at 5%, v5 rejected", "STATUS", 13,
          {"models": [{"name": "leads", "kind": "lead-grading", "active": 7, "latest": 9, "failure": "",
                       "versions": [{"version": 6, "roles": [], "split_weight": 0.0},
                                    {"version": 7, "roles": ["active", "split"], "split_weight": 0.875},
                                    {"version": 8, "roles": ["split"], "split_weight": 0.125},
                                    {"version": 9, "roles": ["shadow"], "split_weight": 0.0}],
                       "rejected": [{"version": 5, "reason": "golden case 2: score 0.25, recorded 0.5"}],
                       "shadow": {"version": 9, "sample": 0.0625,
                                  "comparisons": [{"served": 7, "requests": 40, "rows": 320, "mean_abs_difference": 0.015625,
                                                   "max_abs_difference": 0.125, "ranked_requests": 40,
                                                   "mean_rank_correlation": 0.9375, "code_rows": 320, "changed_codes": 12,
                                                   "dropped": 0, "failed": 0, "code_column": "grade"}]}}]})
    write("reload", "RELOAD: check the store now", "RELOAD", 14, {})
    write("reloaded", "RELOADED: generation 31; v9 loaded, v10 rejected, v6 let go", "RELOADED", 14,
          {"generation": 31, "events": [{"model": "leads", "version": 9, "outcome": "loaded", "detail": "validated"},
                                        {"model": "leads", "version": 10, "outcome": "rejected",
                                         "detail": "checksum mismatch in leads v10: tensor w"},
                                        {"model": "leads", "version": 6, "outcome": "unloaded",
                                         "detail": "no longer active, split, shadow or retained"}]}, time=1800)
    write("schema", "SCHEMA of a small lead-grading model", "SCHEMA", 4, LEAD_SCHEMA)
    write("schema_missing", "SCHEMA of a gbdt model whose numeric features accept missing values (kind bit 7)",
          "SCHEMA", 5, GBDT_SCHEMA)
    write("score_missing", "SCORE with a missing value (NaN) in a feature that accepts it", "SCORE", 11,
          {"model": "approvals", "version": 0, "routing_key": 0, "top_k": 0, "context": [2.0, "nan"],
           "candidate_ids": [7, 8], "candidate_feature_count": 1, "candidate_features": ["nan", 0.5]})
    write("score", "SCORE: two leads, two features each, deadline 250 µs", "SCORE", 7,
          {"model": "leads", "version": 0, "routing_key": 42, "top_k": 0, "context": [3.0, 4200.0],
           "candidate_ids": [101, 102], "candidate_feature_count": 2, "candidate_features": [1.0, 3.5, 4.0, 40.0]},
          time=250)
    write("score_stamped", "SCORE stamped by the client (send stamp 0xDEADBEEF µs, its own clock), deadline 500 µs",
          "SCORE", 9,
          {"model": "leads", "version": 0, "routing_key": 0, "top_k": 0, "context": [3.0, 4200.0],
           "candidate_ids": [101], "candidate_feature_count": 2, "candidate_features": [1.0, 3.5]},
          time=500, send_stamp=0xDEADBEEF)
    write("score_topk_pinned", "SCORE pinned to version 3, best 1 of 3", "SCORE", 8,
          {"model": "lead-model-x", "version": 3, "routing_key": 0, "top_k": 1, "context": [1.0, 2500.0],
           "candidate_ids": [1, 2, 3], "candidate_feature_count": 2,
           "candidate_features": [0.0, 1.5, 2.0, 12.25, 4.0, 0.5]})
    write("score_subject", "SCORE for a subject (flag SUBJECT, subject id 90210 after the model name): rank the best 2 "
          "of 3 items for that user", "SCORE", 12,
          {"model": "feed", "version": 0, "routing_key": 90210, "top_k": 2, "subject_id": 90210, "context": [1.0, 0.5],
           "candidate_ids": [501, 502, 503], "candidate_feature_count": 2,
           "candidate_features": [0.0, 3.0, 2.0, 1.0, 0.0, 2.5]})
    write("result_ranked", "RESULT of a ranking model for score_subject: its own order after a diversity rerank "
          "(item 503 shares 501's category and is passed over for 502, whose fused score is lower), cut to 2; "
          "columns p_view, dot and rank_before", "RESULT", 12,
          {"version": 4, "queue_us": 3, "compute_us": 40, "sorted": True, "ids": [501, 502], "scores": [-0.5, -1.25],
           "columns": [{"name": "p_view", "kind": "float32", "labels": [], "values": [0.625, 0.25]},
                       {"name": "dot", "kind": "float32", "labels": [], "values": [1.5, -0.75]},
                       {"name": "rank_before", "kind": "float32", "labels": [], "values": [1.0, 3.0]}]},
          time=45)
    write("result", "RESULT for the two leads: scores, p_hire, grades B and D", "RESULT", 7,
          {"version": 3, "queue_us": 2, "compute_us": 5, "sorted": False, "ids": [101, 102], "scores": [0.25, 0.03125],
           "columns": [{"name": "p_hire", "kind": "float32", "labels": [], "values": [0.25, 0.03125]},
                       {"name": "grade", "kind": "code", "labels": ["A", "B", "C", "D"], "values": [1, 3]}]},
          time=9)
    write("result_topk", "RESULT of a top-1 request (sorted)", "RESULT", 8,
          {"version": 3, "queue_us": 1, "compute_us": 4, "sorted": True, "ids": [3], "scores": [0.75],
           "columns": [{"name": "p_hire", "kind": "float32", "labels": [], "values": [0.75]},
                       {"name": "grade", "kind": "code", "labels": ["A", "B", "C", "D"], "values": [0]}]},
          time=6)
    messages = {
        "BAD_MAGIC": "frame does not start with the magic \"ARBT\" (41 52 42 54)",
        "UNSUPPORTED_VERSION": "frame is protocol version 9; this server speaks version 1",
        "FRAME_TOO_LARGE": "body of 99999999 bytes is over the limit of 4194304 bytes",
        "UNKNOWN_OPCODE": "opcode 0x42 is not defined in protocol v1",
        "MALFORMED": "body ends before field 'top_k'",
        "HELLO_REQUIRED": "send HELLO before SCORE",
        "UNKNOWN_MODEL": "no model named 'nope' is served (served: leads)",
        "UNKNOWN_VERSION": "model 'leads' has no version 7 (the newest is 3); this server has 3 loaded, 3 active",
        "SCHEMA_MISMATCH": "SCORE carries 3 context features; leads v3 takes 2: job_category, job_salary",
        "TOO_MANY_CANDIDATES": "20000 candidates, over the limit of 10000",
        "INVALID_FEATURE": "candidate row 0 feature 'distance_km' is nan, not a finite number",
        "COMPRESSION_NOT_NEGOTIATED": "the zstd flag is set but this connection did not negotiate zstd in HELLO",
        "BAD_COMPRESSION": "zstd body could not be decompressed: Unknown frame descriptor",
        "OVERLOADED": "too many requests in flight; retry later",
        "DEADLINE_EXCEEDED": "request waited 300 µs, over its budget of 250 µs",
        "SHUTTING_DOWN": "the server is shutting down; retry on a new connection",
        "INTERNAL": "internal error; retry",
        "PROTOCOL_VIOLATION": "HELLO was already completed on this connection",
        "TIMEOUT": "no complete frame within 10000 ms of its first byte; closing",
        "TOO_MANY_CONNECTIONS": "the server holds 4096 connections, its limit; retry later or elsewhere",
        "UNAUTHENTICATED": "this server requires a token in HELLO, and this one is not known to it",
        "FORBIDDEN": "the token 'reporting' may not SCORE (its rights: info)",
        "INVALID_REQUEST": "model 'feed' (kind ranking) ranks for a user: set the SUBJECT flag and send the user's id",
    }
    # Connection-level errors carry request id 0: they answer no request.
    connection_level = {"BAD_MAGIC", "TIMEOUT", "TOO_MANY_CONNECTIONS"}
    # An ERROR that answers a request carries, like every answer, the µs the server held it: the deadline
    # vector shows 300 (the request of vector `score` waited 300 µs against its budget of 250); the others
    # were answered within the microsecond they were read.
    for status, msg in messages.items():
        rid = 0 if status in connection_level else 7
        held = 300 if status == "DEADLINE_EXCEEDED" else 0
        write("error_" + status.lower(), "ERROR " + status, "ERROR", rid, {"message": msg}, status=status, time=held)


if __name__ == "__main__":
    main()
