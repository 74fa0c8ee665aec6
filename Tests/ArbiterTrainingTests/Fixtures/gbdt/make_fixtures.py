#!/usr/bin/env python3
"""Makes the tree-model parity fixtures: XGBoost and LightGBM models (binary logistic and regression, numeric
splits, trained on data with missing values), 10,000 held-out rows with missing values, and each library's
own predictions for them. The Swift tests read these files; CI needs no Python.

Pinned: xgboost 3.2.0, lightgbm 4.7.0, numpy 2.4.6 (pip install xgboost==3.2.0 lightgbm==4.7.0 numpy==2.4.6).
Run from this folder: python3 make_fixtures.py
"""
import numpy as np
import xgboost as xgb
import lightgbm as lgb

FEATURES = 12
rng = np.random.default_rng(20261201)


def make(n):
    X = rng.normal(size=(n, FEATURES)).astype(np.float32)
    X[:, 3] = np.round(X[:, 3] * 2)          # a few distinct values, so rows land exactly on thresholds
    X[:, 7] = np.abs(X[:, 7]) * 1000         # a wide range
    X[rng.random(X.shape) < 0.12] = np.nan   # missing values everywhere
    z = np.nan_to_num(X, nan=0.3)
    margin = 1.2 * z[:, 0] - 0.8 * z[:, 1] * z[:, 2] + 0.5 * np.sin(z[:, 4]) + 0.001 * z[:, 7] + 0.4 * z[:, 3]
    y_bin = (margin + rng.normal(scale=0.7, size=n) > 0.2).astype(np.float32)
    y_reg = (margin + rng.normal(scale=0.3, size=n)).astype(np.float32)
    return X, y_bin, y_reg


X, y_bin, y_reg = make(20_000)
T, _, _ = make(10_000)
names = [f"x{i}" for i in range(FEATURES)]


def write_rows(path, rows):
    with open(path, "w") as f:
        f.write(",".join(names) + "\n")
        for r in rows:
            f.write(",".join("" if np.isnan(v) else repr(float(v)) for v in r) + "\n")


def write_predictions(path, p):
    with open(path, "w") as f:
        for v in p:
            f.write(repr(float(v)) + "\n")


write_rows("rows.csv", T)

for objective, y, tag in [("binary:logistic", y_bin, "binary"), ("reg:squarederror", y_reg, "regression")]:
    d = xgb.DMatrix(X, label=y, feature_names=names)
    b = xgb.train({"objective": objective, "max_depth": 5, "eta": 0.2, "seed": 1, "nthread": 1}, d, num_boost_round=60)
    b.save_model(f"xgboost-{tag}.json")
    write_predictions(f"xgboost-{tag}.predictions", b.inplace_predict(T))

for objective, y, tag in [("binary", y_bin, "binary"), ("regression", y_reg, "regression")]:
    ds = lgb.Dataset(X, label=y, feature_name=names, free_raw_data=False)
    m = lgb.train({"objective": objective, "num_leaves": 24, "learning_rate": 0.15, "seed": 1, "num_threads": 1,
                   "verbose": -1, "deterministic": True}, ds, num_boost_round=60)
    m.save_model(f"lightgbm-{tag}.txt")
    write_predictions(f"lightgbm-{tag}.predictions", m.predict(T))

# A LightGBM model with a categorical split, which the importer must refuse by name.
C = np.column_stack([rng.integers(0, 6, size=2000).astype(np.float32), rng.normal(size=2000).astype(np.float32)])
yc = (C[:, 0] % 2 == 0).astype(np.float32)
mc = lgb.train({"objective": "binary", "num_leaves": 4, "verbose": -1, "min_data_per_group": 5, "cat_smooth": 1},
               lgb.Dataset(C, label=yc, categorical_feature=[0]), num_boost_round=2)
mc.save_model("lightgbm-categorical.txt")
print("fixtures written")
