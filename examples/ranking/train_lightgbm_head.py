#!/usr/bin/env python3
"""Trains one head of a ranking model with LightGBM, on the head rows `arbiter-train train --kind ranking
--write-head-rows ROWS.csv` wrote: each impression's user features, item features and the user·item dot
product of that run's embeddings, with its split and labels. The head is p(reply | chat): it is fitted on the
training impressions that reached a chat, label `reply`, early-stopped on the validation ones. Codes (u_segment, category) are used as numbers: categorical
splits are refused by the importer.

  OUT/model.txt            the head (LightGBM text format), for --head p_reply_given_chat=lightgbm-text:OUT/model.txt
  OUT/check.csv            2,000 held-out head rows, and
  OUT/check.predictions    LightGBM's predictions for them, for --head-check (the import's parity check)

Pinned: lightgbm 4.7.0, numpy 2.4.6.   Usage: python3 train_lightgbm_head.py ROWS.csv OUT_DIR
"""
import os
import sys

import lightgbm as lgb
import numpy as np

rows_file = sys.argv[1]
out = sys.argv[2] if len(sys.argv) > 2 else "var/head"
os.makedirs(out, exist_ok=True)
with open(rows_file) as f:
    header = f.readline().strip().split(",")
features = header[3:-3]          # after split,user_id,item_id; before view,chat,reply
split = np.loadtxt(rows_file, delimiter=",", skiprows=1, usecols=[0], dtype=str)
data = np.loadtxt(rows_file, delimiter=",", skiprows=1, usecols=range(3, len(header)), dtype=np.float64)
X = data[:, :len(features)].astype(np.float32)
chat, reply = data[:, -2] == 1, data[:, -1]
train, valid = (split == "train") & chat, (split == "validation") & chat
params = {"objective": "binary", "num_leaves": 31, "learning_rate": 0.05, "min_data_in_leaf": 40,
          "verbose": -1, "seed": 1}
model = lgb.train(params, lgb.Dataset(X[train], label=reply[train], feature_name=features),
                  num_boost_round=400, valid_sets=[lgb.Dataset(X[valid], label=reply[valid], feature_name=features)],
                  callbacks=[lgb.early_stopping(30, verbose=False)])
model.save_model(os.path.join(out, "model.txt"), num_iteration=model.best_iteration)
model = lgb.Booster(model_file=os.path.join(out, "model.txt"))

check = np.flatnonzero(split == "test")[:2000]
with open(os.path.join(out, "check.csv"), "w") as f:
    f.write(",".join(features) + "\n")
    for r in X[check]:
        f.write(",".join(repr(float(v)) for v in r) + "\n")
with open(os.path.join(out, "check.predictions"), "w") as f:
    for p in model.predict(X[check]):
        f.write(repr(float(p)) + "\n")
print(f"LightGBM {lgb.__version__}: head p_reply_given_chat, {model.num_trees()} trees on {int(train.sum())} chats; "
      f"wrote {out}/model.txt, {out}/check.csv, {out}/check.predictions")
