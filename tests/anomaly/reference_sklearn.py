"""Independent reference for megamind's anomaly detectors: scikit-learn's IsolationForest
and DBSCAN on the data megamind was given.

usage: reference_sklearn.py < request.json > answer.json

request: {"train": [[x, y], ...], "probes": [[x, y], ...], "trees": T, "sample": S,
          "seeds": K, "points": [[...], ...], "eps": E, "min_samples": M}
answer:  {"forest": [score per probe], "dbscan": [label per point, -1 = noise]}

The forest scores are `-score_samples` (the paper's s = 2^(-E[h]/c(S)), as megamind
reports it), averaged over K differently seeded forests so the comparison is with the
expectation rather than with one random forest. DBSCAN uses the cosine metric.
"""

import json
import sys

import numpy as np
from sklearn.cluster import DBSCAN
from sklearn.ensemble import IsolationForest


def main() -> None:
    request = json.load(sys.stdin)
    train = np.asarray(request["train"], dtype=float)
    probes = np.asarray(request["probes"], dtype=float)
    scores = np.zeros(len(probes))
    for seed in range(request["seeds"]):
        forest = IsolationForest(n_estimators=request["trees"], max_samples=request["sample"], random_state=seed)
        forest.fit(train)
        scores += -forest.score_samples(probes)
    scores /= request["seeds"]
    points = np.asarray(request["points"], dtype=float)
    labels = DBSCAN(eps=request["eps"], min_samples=request["min_samples"], metric="cosine").fit_predict(points)
    json.dump({"forest": scores.tolist(), "dbscan": [int(label) for label in labels]}, sys.stdout)


if __name__ == "__main__":
    main()
