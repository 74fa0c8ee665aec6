#!/usr/bin/env python3
"""LightGBM reference for the lead-grading stages, on the same CSV and the same split as arbiter-train.

Split by row index i (0-based, header excluded): i % 10 in {0, 1} is test, 2 is validation (early
stopping), the rest trains. Each stage learns on the rows that reached it: contact on all rows, interview
on contacted rows, hire on interviewed rows. Prints one JSON object with each stage's held-out AUC and
log loss.
"""
import json
import sys

import lightgbm as lgb
import numpy as np
from sklearn.metrics import log_loss, roc_auc_score

CATEGORICAL = ["job_category", "channel", "city"]
FEATURES = ["job_category", "job_salary", "channel", "city", "distance_km", "salary_gap", "activity",
            "experience_years"]
STAGES = [("contact", None, "contacted"), ("interview", "contacted", "interviewed"),
          ("hire", "interviewed", "hired")]


def main(path):
    data = np.genfromtxt(path, delimiter=",", names=True)
    n = len(data)
    idx = np.arange(n)
    split = idx % 10
    test, val, train = np.isin(split, [0, 1]), split == 2, split >= 3
    X = np.column_stack([data[f] for f in FEATURES])
    cat_idx = [FEATURES.index(c) for c in CATEGORICAL]
    out = {}
    for stage, reached, label in STAGES:
        mask = np.ones(n, bool) if reached is None else data[reached] == 1
        y = data[label]
        params = dict(objective="binary", learning_rate=0.05, num_leaves=31, min_data_in_leaf=50,
                      feature_fraction=0.9, verbose=-1, seed=1)
        dtrain = lgb.Dataset(X[train & mask], y[train & mask], categorical_feature=cat_idx)
        dval = lgb.Dataset(X[val & mask], y[val & mask], categorical_feature=cat_idx, reference=dtrain)
        booster = lgb.train(params, dtrain, num_boost_round=2000, valid_sets=[dval],
                            callbacks=[lgb.early_stopping(50, verbose=False)])
        p = booster.predict(X[test & mask], num_iteration=booster.best_iteration)
        yt = y[test & mask]
        out[stage] = {"auc": float(roc_auc_score(yt, p)), "logloss": float(log_loss(yt, p)),
                      "rows": int(yt.size), "rounds": int(booster.best_iteration)}
    print(json.dumps(out, indent=2, sort_keys=True))


if __name__ == "__main__":
    main(sys.argv[1])
