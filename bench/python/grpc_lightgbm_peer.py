#!/usr/bin/env python3
"""The typical Python stack, as a benchmark peer: a grpcio server scoring leads with LightGBM.

It serves bench/proto/scorer.proto (Ping and Score) like bench's grpc-swift peer, with an equivalent
lead-grading model: one LightGBM booster per stage (contact; interview given contact; hire given
interview), chained (p_interview = p_contact x p_interview|contact, ...), grades A/B/C/D from held-out
quantiles of p_hire (top 10% / next 20% / next 30% / rest), trained at start on the CSV that
`arbiter-train gen-data` writes, with the same split as scripts/lightgbm_reference.py.

    pip install grpcio grpcio-tools lightgbm numpy
    bench/python/grpc_lightgbm_peer.py --data leads.csv --port 7880 [--workers 4]

The message code is generated at start from scorer.proto (grpc_tools), so it always matches the
installed protobuf runtime.
"""
import argparse
import os
import sys
import tempfile
import time
from concurrent import futures

import grpc
import lightgbm as lgb
import numpy as np
from grpc_tools import protoc

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_DIR = os.path.join(HERE, "..", "proto")
FEATURES = ["job_category", "job_salary", "channel", "city", "distance_km", "salary_gap", "activity",
            "experience_years"]
CATEGORICAL = ["job_category", "channel", "city"]
STAGES = [("contact", None, "contacted"), ("interview", "contacted", "interviewed"),
          ("hire", "interviewed", "hired")]
GRADES = ["A", "B", "C", "D"]


def generate_stubs():
    out = tempfile.mkdtemp(prefix="arbiter-bench-proto-")
    rc = protoc.main(["protoc", f"--proto_path={PROTO_DIR}", f"--python_out={out}",
                      f"--grpc_python_out={out}", os.path.join(PROTO_DIR, "scorer.proto")])
    if rc != 0:
        sys.exit(f"grpc_tools.protoc failed on scorer.proto (exit {rc})")
    sys.path.insert(0, out)
    import scorer_pb2
    import scorer_pb2_grpc
    return scorer_pb2, scorer_pb2_grpc


def train(path, max_rounds):
    data = np.genfromtxt(path, delimiter=",", names=True)
    missing = [c for c in FEATURES + [s[2] for s in STAGES] if c not in data.dtype.names]
    if missing:
        sys.exit(f"{path}: missing columns {missing} (expected a lead-grading CSV from arbiter-train gen-data)")
    n = len(data)
    split = np.arange(n) % 10
    test, val, trn = np.isin(split, [0, 1]), split == 2, split >= 3
    X = np.column_stack([data[f] for f in FEATURES])
    cat_idx = [FEATURES.index(c) for c in CATEGORICAL]
    boosters = []
    for _, reached, label in STAGES:
        mask = np.ones(n, bool) if reached is None else data[reached] == 1
        y = data[label]
        params = dict(objective="binary", learning_rate=0.05, num_leaves=31, min_data_in_leaf=50,
                      feature_fraction=0.9, verbose=-1, seed=1, num_threads=1)
        dtrain = lgb.Dataset(X[trn & mask], y[trn & mask], categorical_feature=cat_idx)
        dval = lgb.Dataset(X[val & mask], y[val & mask], categorical_feature=cat_idx, reference=dtrain)
        b = lgb.train(params, dtrain, num_boost_round=max_rounds, valid_sets=[dval],
                      callbacks=[lgb.early_stopping(30, verbose=False)])
        boosters.append(b)
    p_hire = chain(boosters, X[test])[2]
    q = np.quantile(p_hire, [0.9, 0.7, 0.4])  # A: top 10%, B: next 20%, C: next 30%
    return boosters, q


def chain(boosters, X):
    c = boosters[0].predict(X, num_threads=1)
    i = c * boosters[1].predict(X, num_threads=1)
    h = i * boosters[2].predict(X, num_threads=1)
    return c, i, h


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="lead-grading CSV (arbiter-train gen-data)")
    ap.add_argument("--port", type=int, default=7880)
    ap.add_argument("--model", default="leads", help="the model name requests must carry")
    ap.add_argument("--workers", type=int, default=4, help="gRPC thread-pool size")
    ap.add_argument("--max-rounds", type=int, default=300)
    args = ap.parse_args()
    pb2, pb2_grpc = generate_stubs()
    t0 = time.time()
    boosters, thresholds = train(args.data, args.max_rounds)
    print(f"grpc-lightgbm-peer: trained {[b.num_trees() for b in boosters]} trees in {time.time() - t0:.1f}s",
          flush=True)
    n_ctx, n_cand = 2, 6

    class Scorer(pb2_grpc.ScorerServicer):
        def Ping(self, request, context):
            return pb2.PingReply(payload=request.payload)

        def Score(self, request, context):
            started = time.perf_counter_ns()
            if request.model != args.model:
                context.abort(grpc.StatusCode.NOT_FOUND, f"unknown model '{request.model}'")
            n = len(request.candidate_ids)
            if len(request.context) != n_ctx or request.candidate_feature_count != n_cand \
                    or len(request.candidate_features) != n * n_cand:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "features do not match the lead-grading schema")
            cand = np.asarray(request.candidate_features, dtype=np.float64).reshape(n, n_cand)
            ctx = np.broadcast_to(np.asarray(request.context, dtype=np.float64), (n, n_ctx))
            # FEATURES order: job_category, job_salary, then the six lead features.
            X = np.concatenate([ctx, cand], axis=1)
            if not np.isfinite(X).all():
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "NaN or infinite feature")
            c, i, h = chain(boosters, X)
            # Grade codes (0 = A ... 3 = D) as one byte per candidate, labelled by code_labels, as the
            # grpc-swift peer and Arbiter's RESULT send them.
            grades = np.searchsorted(-thresholds, -h, side="right").astype(np.uint8).tobytes()
            return pb2.ScoreReply(
                version=1, scores=h.tolist(),
                columns=[pb2.Column(name="p_contact", values=c.tolist()),
                         pb2.Column(name="p_interview", values=i.tolist()),
                         pb2.Column(name="p_hire", values=h.tolist()),
                         pb2.Column(name="grade", codes=grades, code_labels=GRADES)],
                compute_micros=(time.perf_counter_ns() - started) // 1000)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=args.workers))
    pb2_grpc.add_ScorerServicer_to_server(Scorer(), server)
    if server.add_insecure_port(f"127.0.0.1:{args.port}") == 0:
        sys.exit(f"cannot listen on 127.0.0.1:{args.port}")
    server.start()
    print(f"grpc-lightgbm-peer: listening on 127.0.0.1:{args.port}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
