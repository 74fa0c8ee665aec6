#!/usr/bin/env python3
"""Trains the p(approve) head of a routing model with XGBoost, on the head rows `arbiter-train train --kind
routing --write-head-rows ROWS.csv` wrote: each logged submission's applicant features, the lender's state
(capacity, load) and the lender (its row in the version's table), with its split and outcome. Fitted on the
training submissions, label `approved`, early-stopped on the validation ones. Codes (channel, region, lender)
are used as numbers: categorical splits are refused by the importer.

  OUT/approve.json         the head (XGBoost JSON), for --head approve=xgboost-json:OUT/approve.json
  OUT/check.csv            up to 2,000 held-out head rows, and
  OUT/check.predictions    XGBoost's predictions for them (the served p_approve must equal them)

Pinned: xgboost 3.2.0, numpy 2.4.6.   Usage: python3 train_xgboost_head.py ROWS.csv OUT_DIR [TREES]
"""
import os
import sys

import numpy as np
import xgboost as xgb

rows_file = sys.argv[1]
out = sys.argv[2] if len(sys.argv) > 2 else "var/route-head"
trees = int(sys.argv[3]) if len(sys.argv) > 3 else 300
os.makedirs(out, exist_ok=True)
with open(rows_file) as f:
    header = f.readline().strip().split(",")
features = header[3:-2]          # after split,applicant_id,lender_id; before approved,funded_amount
split = np.loadtxt(rows_file, delimiter=",", skiprows=1, usecols=[0], dtype=str)
data = np.loadtxt(rows_file, delimiter=",", skiprows=1, usecols=range(3, len(header)), dtype=np.float64)
X = data[:, :len(features)].astype(np.float32)
approved = data[:, -2]
train, valid = split == "train", split == "validation"
dtrain = xgb.DMatrix(X[train], label=approved[train], feature_names=features)
dvalid = xgb.DMatrix(X[valid], label=approved[valid], feature_names=features)
params = {"objective": "binary:logistic", "max_depth": 5, "eta": 0.1, "min_child_weight": 5, "subsample": 0.9,
          "seed": 1, "eval_metric": "logloss"}
model = xgb.train(params, dtrain, num_boost_round=trees, evals=[(dvalid, "validation")], early_stopping_rounds=20,
                  verbose_eval=False)
model = model[: model.best_iteration + 1]
model.save_model(os.path.join(out, "approve.json"))
model = xgb.Booster(model_file=os.path.join(out, "approve.json"))

check = np.flatnonzero(split == "test")[:2000]
with open(os.path.join(out, "check.csv"), "w") as f:
    f.write(",".join(features) + "\n")
    for r in X[check]:
        f.write(",".join(repr(float(v)) for v in r) + "\n")
with open(os.path.join(out, "check.predictions"), "w") as f:
    for p in model.predict(xgb.DMatrix(X[check], feature_names=features)):
        f.write(repr(float(p)) + "\n")
print(f"XGBoost {xgb.__version__}: head approve, {model.num_boosted_rounds()} trees on {int(train.sum())} submissions; "
      f"wrote {out}/approve.json, {out}/check.csv, {out}/check.predictions")
