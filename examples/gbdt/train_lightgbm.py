#!/usr/bin/env python3
"""Trains a small LightGBM model the way a team would, and writes what `arbiter-train import` and
`arbiter score` take, plus LightGBM's own predictions to compare with:

  OUT/model.txt            the model (LightGBM text format)
  OUT/check.csv            2,000 held-out rows (empty = missing) and
  OUT/check.predictions    LightGBM's predictions for them, for the import's parity check
  OUT/request.json         one request for `arbiter score` (two applicants' context, three lenders each... here:
                           one context and four candidates, one with a missing value)
  OUT/expected.json        LightGBM's predictions for that request's candidates, by id

Pinned: lightgbm 4.7.0, numpy 2.4.6.   Usage: python3 train_lightgbm.py OUT_DIR
"""
import json
import os
import sys

import lightgbm as lgb
import numpy as np

out = sys.argv[1] if len(sys.argv) > 1 else "var/gbdt"
os.makedirs(out, exist_ok=True)
rng = np.random.default_rng(3)
names = ["region", "income", "utilization", "inquiries", "tenure_months", "amount"]
n = 20_000
X = np.column_stack([
    rng.integers(0, 4, n),                 # region: a code
    rng.lognormal(10, 0.5, n),             # income
    rng.uniform(0, 1, n),                  # utilization
    rng.poisson(1.5, n),                   # inquiries
    rng.integers(0, 240, n),               # tenure_months
    rng.uniform(1_000, 40_000, n),         # amount asked
]).astype(np.float32)
X[rng.random(n) < 0.08, 1] = np.nan        # income sometimes missing
X[rng.random(n) < 0.05, 2] = np.nan        # utilization sometimes missing
z = np.nan_to_num(X, nan=0.5)
logit = 0.8 * np.log(z[:, 1] + 1) / 10 - 2.5 * z[:, 2] - 0.4 * z[:, 3] + 0.004 * z[:, 4] - z[:, 5] / 40_000 + 0.3 * (z[:, 0] == 2)
y = (rng.random(n) < 1 / (1 + np.exp(-(logit + 0.5)))).astype(np.float32)
train, check = slice(0, 18_000), slice(18_000, n)
model = lgb.train({"objective": "binary", "num_leaves": 31, "learning_rate": 0.1, "verbose": -1, "seed": 1},
                  lgb.Dataset(X[train], label=y[train], feature_name=names), num_boost_round=150)
model.save_model(os.path.join(out, "model.txt"))

with open(os.path.join(out, "check.csv"), "w") as f:
    f.write(",".join(names) + "\n")
    for r in X[check]:
        f.write(",".join("" if np.isnan(v) else repr(float(v)) for v in r) + "\n")
with open(os.path.join(out, "check.predictions"), "w") as f:
    for p in model.predict(X[check]):
        f.write(repr(float(p)) + "\n")

# One request: the applicant (region, income) is the context; each lender's offer is a candidate.
context = {"region": 2, "income": 52000.0}
candidates = [
    {"id": 11, "features": {"utilization": 0.35, "inquiries": 1, "tenure_months": 60, "amount": 12000}},
    {"id": 12, "features": {"utilization": 0.90, "inquiries": 4, "tenure_months": 6, "amount": 30000}},
    {"id": 13, "features": {"utilization": None, "inquiries": 0, "tenure_months": 120, "amount": 5000}},
    {"id": 14, "features": {"utilization": 0.10, "inquiries": 2, "tenure_months": 200, "amount": 20000}},
]
with open(os.path.join(out, "request.json"), "w") as f:
    json.dump({"context": context, "candidates": candidates}, f, indent=2)
rows = np.array([[context["region"], context["income"]] + [np.nan if c["features"][k] is None else c["features"][k]
                  for k in names[2:]] for c in candidates], dtype=np.float32)
expected = {str(c["id"]): float(p) for c, p in zip(candidates, model.predict(rows))}
with open(os.path.join(out, "expected.json"), "w") as f:
    json.dump(expected, f, indent=2)
print("LightGBM", lgb.__version__, "predictions for request.json:", json.dumps(expected))
