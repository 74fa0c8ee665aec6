#!/usr/bin/env python3
"""The tree-kernel benchmark's model, rows and library timings.

  python3 kernel_peers.py make OUT_DIR     train the benchmark models and write rows:
      OUT/xgboost.json   XGBoost, 300 trees of depth 6 over 40 features (binary:logistic)
      OUT/lightgbm.txt   LightGBM, 300 trees of at most 64 leaves, depth at most 6
      OUT/rows.csv       10,000 rows with about 5% missing values
  python3 kernel_peers.py time OUT_DIR     time xgboost inplace_predict, LightGBM predict and (when treelite
      and tl2cgen are installed) the XGBoost model compiled to C by tl2cgen, one thread, at batch sizes 1, 200
      and 10,000 over the same rows; prints one JSON line per (library, batch)

Pinned: xgboost 3.2.0, lightgbm 4.7.0, numpy 2.4.6, treelite 4.8.1, tl2cgen 1.0.0 (gcc 12, its default flags).
"""
import json
import os
import sys
import time

import numpy as np

FEATURES = 40
TREES = 300


def make(out):
    import xgboost as xgb
    import lightgbm as lgb
    rng = np.random.default_rng(7)
    X = rng.normal(size=(60_000, FEATURES)).astype(np.float32)
    X[rng.random(X.shape) < 0.05] = np.nan
    z = np.nan_to_num(X)
    margin = z[:, :10] @ rng.normal(size=10) + 0.5 * z[:, 10] * z[:, 11] + np.sin(z[:, 12] * 2)
    y = (margin + rng.normal(scale=1.0, size=len(margin)) > 0).astype(np.float32)
    names = [f"f{i}" for i in range(FEATURES)]
    b = xgb.train({"objective": "binary:logistic", "max_depth": 6, "eta": 0.1, "nthread": 2, "seed": 1},
                  xgb.DMatrix(X, label=y, feature_names=names), num_boost_round=TREES)
    b.save_model(os.path.join(out, "xgboost.json"))
    m = lgb.train({"objective": "binary", "num_leaves": 64, "max_depth": 6, "learning_rate": 0.1, "verbose": -1,
                   "num_threads": 2, "seed": 1}, lgb.Dataset(X, label=y, feature_name=names), num_boost_round=TREES)
    m.save_model(os.path.join(out, "lightgbm.txt"))
    R = X[:10_000]
    with open(os.path.join(out, "rows.csv"), "w") as f:
        for r in R:
            f.write(",".join("" if np.isnan(v) else repr(float(v)) for v in r) + "\n")
    np.save(os.path.join(out, "rows.npy"), R)
    print("models and rows written to", out)


def median_time(fn, batches, min_seconds=2.0):
    """Median seconds per call of fn over the batches (cycled), after a warm-up."""
    for b in batches[:3]:
        fn(b)
    samples = []
    start = time.perf_counter()
    i = 0
    while time.perf_counter() - start < min_seconds or len(samples) < 15:
        b = batches[i % len(batches)]
        t0 = time.perf_counter()
        fn(b)
        samples.append(time.perf_counter() - t0)
        i += 1
    samples.sort()
    return samples[len(samples) // 2]


def timing(out):
    import xgboost as xgb
    import lightgbm as lgb
    R = np.load(os.path.join(out, "rows.npy"))
    b = xgb.Booster(model_file=os.path.join(out, "xgboost.json"))
    b.set_param({"nthread": 1})
    m = lgb.Booster(model_file=os.path.join(out, "lightgbm.txt"))
    compiled = tl2cgen_predictor(out, b, R)
    for batch in (1, 200, 10_000):
        batches = [R[i:i + batch] for i in range(0, len(R) - batch + 1, batch)][:50]
        if compiled:
            predictor, tl2cgen = compiled
            # The DMatrix wraps the rows for the compiled predictor; making it is part of every call.
            t = median_time(lambda x: predictor.predict(tl2cgen.DMatrix(x)), batches)
            print(json.dumps({"library": f"tl2cgen {tl2cgen.__version__} compiled predictor", "batch": batch,
                              "us_per_call": t * 1e6, "ns_per_row": t * 1e9 / batch}))
        t = median_time(lambda x: b.inplace_predict(x), batches)
        print(json.dumps({"library": f"xgboost {xgb.__version__} inplace_predict", "batch": batch, "us_per_call": t * 1e6,
                          "ns_per_row": t * 1e9 / batch}))
        t = median_time(lambda x: m.predict(x, num_threads=1), batches)
        print(json.dumps({"library": f"lightgbm {lgb.__version__} predict", "batch": batch, "us_per_call": t * 1e6,
                          "ns_per_row": t * 1e9 / batch}))


def tl2cgen_predictor(out, booster, rows):
    """The XGBoost model compiled to a shared library by tl2cgen (None when treelite or tl2cgen is missing),
    checked against xgboost's own predictions first."""
    try:
        import treelite
        import tl2cgen
    except ImportError:
        print("treelite/tl2cgen not installed: the compiled predictor is left out", file=sys.stderr)
        return None
    lib = os.path.join(out, "tl2cgen-xgboost.so")
    model = treelite.frontend.load_xgboost_model(os.path.join(out, "xgboost.json"))
    if not os.path.exists(lib) or os.path.getmtime(lib) < os.path.getmtime(os.path.join(out, "xgboost.json")):
        tl2cgen.export_lib(model, toolchain="gcc", libpath=lib, nthread=2)
    predictor = tl2cgen.Predictor(lib, nthread=1)
    got = np.asarray(predictor.predict(tl2cgen.DMatrix(rows))).reshape(-1)
    want = booster.inplace_predict(rows)
    diff = float(np.max(np.abs(got - want)))
    print(f"tl2cgen's compiled predictor against xgboost: max |difference| {diff:.2e} over {len(rows)} rows",
          file=sys.stderr)
    if diff > 1e-5:
        sys.exit(f"tl2cgen's predictions differ from xgboost's by {diff}: not timing a predictor that is wrong")
    return predictor, tl2cgen


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("make", "time"):
        sys.exit(__doc__)
    os.makedirs(sys.argv[2], exist_ok=True)
    (make if sys.argv[1] == "make" else timing)(sys.argv[2])
