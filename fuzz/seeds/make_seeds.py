#!/usr/bin/env python3
"""Small model files for the import fuzzer's seed corpus (fuzz/run.sh prefixes each with its format byte):
two XGBoost models and two LightGBM models of a few shallow trees, with missing values in the training
data so that default directions vary, and one LightGBM model with a categorical split.

Pinned: xgboost 3.2.0, lightgbm 4.7.0, numpy 2.4.6. Run from this folder: python3 make_seeds.py
"""
import numpy as np
import xgboost as xgb
import lightgbm as lgb

rng = np.random.default_rng(3)
X = rng.normal(size=(400, 4)).astype(np.float32)
X[rng.random(X.shape) < 0.1] = np.nan
y = (np.nan_to_num(X[:, 0]) + np.nan_to_num(X[:, 1]) > 0).astype(np.float32)
xgb.train({"objective": "binary:logistic", "max_depth": 2, "nthread": 1, "seed": 1},
          xgb.DMatrix(X, label=y), num_boost_round=3).save_model("xgboost-binary.json")
xgb.train({"objective": "reg:squarederror", "max_depth": 3, "nthread": 1, "seed": 1},
          xgb.DMatrix(X, label=np.nan_to_num(X[:, 2])), num_boost_round=2).save_model("xgboost-regression.json")
params = dict(num_leaves=4, min_data_in_leaf=20, verbose=-1, num_threads=1, seed=1)
lgb.train(dict(params, objective="binary"), lgb.Dataset(X, label=y), num_boost_round=3).save_model("lightgbm-binary.txt")
C = X.copy()
C[:, 3] = rng.integers(0, 5, size=len(C))
lgb.train(dict(params, objective="regression"), lgb.Dataset(C, label=C[:, 3] * 2 + np.nan_to_num(C[:, 0]), categorical_feature=[3]),
          num_boost_round=2).save_model("lightgbm-categorical.txt")
print("seeds written")
