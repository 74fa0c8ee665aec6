#!/usr/bin/env python3
"""Score a CSV of leads with a running arbiterd and measure the scores' AUC against the CSV's labels.

    arbiter-train gen-data --kind lead-grading --rows 200000 --seed 7 --leads-per-posting 8 --out holdout.csv
    python3 clients/python/examples/score_csv.py --csv holdout.csv --port 7878

Rows with the same --group-by value (a job posting) are scored in one request: their context comes from the
posting's first row, every row is a candidate. Requests are pipelined over --connections connections. Each
--evaluate LABEL=COLUMN pair prints the AUC of the served COLUMN for the 0/1 LABEL column (by default the three
lead-grading stages). Pure Python: no numpy or scikit-learn needed.
"""

import argparse
import asyncio
import csv
import math
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import arbiter_client as ac  # noqa: E402
from arbiter_client.protocol import ScoreRequest  # noqa: E402


def auc(scores, labels):
    """Area under the ROC curve: the chance a random positive outscores a random negative (ties count half)."""
    pairs = sorted(zip(scores, labels))
    positives = sum(labels)
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    rank_sum, i = 0.0, 0
    while i < len(pairs):
        j = i
        while j < len(pairs) and pairs[j][0] == pairs[i][0]:
            j += 1
        mean_rank = (i + 1 + j) / 2  # ranks i+1 … j share their mean
        rank_sum += mean_rank * sum(label for _, label in pairs[i:j])
        i = j
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def value(text, feature, line):
    text = text.strip()
    if text == "" or text.lower() in ("na", "nan", "null"):
        if not feature.missing:
            sys.exit(f"line {line}: {feature.name} is missing and the model does not accept a missing value")
        return math.nan
    try:
        return float(text)
    except ValueError:
        sys.exit(f"line {line}: {feature.name} is {text!r}, not a number")


async def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--csv", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=7878)
    ap.add_argument("--model", default="leads")
    ap.add_argument("--group-by", default="posting_id")
    ap.add_argument("--id-column", default="lead_id")
    ap.add_argument("--evaluate", action="append",
                    help="LABEL=COLUMN (repeatable); default contacted=p_contact, interviewed=p_interview, hired=p_hire")
    ap.add_argument("--connections", type=int, default=2)
    ap.add_argument("--in-flight", type=int, default=64)
    ap.add_argument("--token", default=os.environ.get("ARBITER_TOKEN"))
    ap.add_argument("--out", help="also write id,score and the model's columns here")
    args = ap.parse_args()
    evaluate = [e.split("=", 1) for e in (args.evaluate or ["contacted=p_contact", "interviewed=p_interview", "hired=p_hire"])]

    async with await ac.Pool.connect(args.host, args.port, connections=args.connections, token=args.token) as pool:
        schema = await pool.clients[0].info(args.model)
        start = time.perf_counter()
        with open(args.csv, newline="") as f:
            reader = csv.reader(f)
            header = [h.strip() for h in next(reader)]
            col = {name: i for i, name in enumerate(header)}
            needed = [args.group_by, args.id_column] + [f.name for f in schema.context_features + schema.candidate_features] + [
                label for label, _ in evaluate]
            missing = [n for n in needed if n not in col]
            if missing:
                sys.exit(f"{args.csv} lacks the column(s) {', '.join(missing)}; it has {', '.join(header)}")
            requests, labels = [], {label: [] for label, _ in evaluate}
            key, ids, matrix = None, [], []
            for line, row in enumerate(reader, start=2):
                if row[col[args.group_by]] != key:
                    if ids:
                        requests.append(ScoreRequest(args.model, context, ids, matrix, len(schema.candidate_features)))
                    key, ids, matrix = row[col[args.group_by]], [], []
                    context = [value(row[col[f.name]], f, line) for f in schema.context_features]
                ids.append(int(row[col[args.id_column]]))
                matrix.extend(value(row[col[f.name]], f, line) for f in schema.candidate_features)
                for label, _ in evaluate:
                    labels[label].append(int(row[col[label]]))
            if ids:
                requests.append(ScoreRequest(args.model, context, ids, matrix, len(schema.candidate_features)))
        read = time.perf_counter()
        results = await pool.score_many(requests, in_flight=args.in_flight)
        scored = time.perf_counter()

    rows = sum(len(r.ids) for r in results)
    print(f"{args.csv}: {rows} rows in {len(requests)} requests of {args.model} v{results[0].version}; "
          f"read {read - start:.2f} s, scored {scored - read:.2f} s ({rows / max(scored - read, 1e-9):.0f} rows/s "
          f"over {args.connections} connection(s))")
    for label, column in evaluate:
        served = [v for r in results for v in r.column(column)]
        print(f"  AUC of {column:<12} for {label:<12} {auc(served, labels[label]):.4f}  "
              f"(positives {sum(labels[label])} of {len(served)})")
    if args.out:
        with open(args.out, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "score"] + [c.name for c in results[0].columns])
            for r in results:
                for row in r.rows():
                    w.writerow(row.values())
        print(f"  wrote {rows} rows to {args.out}")


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except ac.ArbiterError as e:
        sys.exit(f"arbiterd refused: {e}")
