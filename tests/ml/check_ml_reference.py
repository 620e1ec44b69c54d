#!/usr/bin/env python3
"""Independent reference for megamind's ML tracking (tests/it/ml.rs).

Reads a JSON file describing, per model version, the matched prediction/outcome pairs in
the order megamind feeds its ordered analyses ((ts, prediction_id) of the pair), and the
reference and current drift windows. Prints one JSON object with what scikit-learn,
scipy and River compute from the same data:

- accuracy_score, precision_recall_fscore_support (per class, macro, weighted;
  zero_division=0.0) and confusion_matrix over the sorted union of labels;
- scipy.stats.ks_2samp (default method='auto') on the confidences of the two windows;
- scipy.stats.chi2_contingency (default Yates correction) on the predicted-label counts
  of the two windows (labels seen in either window);
- river.drift.ADWIN(delta=0.002) on the 0/1 error stream: 1-based positions of detections;
- the Wilson interval from scipy.stats.binomtest(...).proportion_ci(method='wilson').

Usage: check_ml_reference.py INPUT.json  (prints JSON on stdout)
"""

import json
import sys

import numpy as np
import scipy
import scipy.stats as st
import sklearn
from river import drift
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support


def version_reference(version: dict) -> dict:
    y_true = version["actual"]
    y_pred = version["predicted"]
    labels = sorted(set(y_true) | set(y_pred))
    out = {"model_id": version["model_id"], "model_version": version["model_version"], "labels": labels}
    out["matched"] = len(y_true)
    out["accuracy"] = float(accuracy_score(y_true, y_pred))
    correct = int(sum(1 for t, p in zip(y_true, y_pred) if t == p))
    ci = st.binomtest(correct, len(y_true)).proportion_ci(0.95, method="wilson")
    out["wilson"] = [float(ci.low), float(ci.high)]
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0.0)
    out["per_class"] = [
        {"precision": float(a), "recall": float(b), "f1": float(c), "support": int(d)} for a, b, c, d in zip(p, r, f, s)
    ]
    for average in ("macro", "weighted"):
        a, b, c, _ = precision_recall_fscore_support(
            y_true, y_pred, labels=labels, average=average, zero_division=0.0
        )
        out[average] = {"precision": float(a), "recall": float(b), "f1": float(c)}
    out["confusion"] = confusion_matrix(y_true, y_pred, labels=labels).tolist()

    reference, current = version["reference_confidence"], version["current_confidence"]
    if reference and current:
        ks = st.ks_2samp(reference, current)
        out["ks"] = {"statistic": float(ks.statistic), "p_value": float(ks.pvalue)}
        window_labels = sorted(set(version["reference_predicted"]) | set(version["current_predicted"]))
        table = [
            [version["reference_predicted"].count(label) for label in window_labels],
            [version["current_predicted"].count(label) for label in window_labels],
        ]
        if len(window_labels) >= 2:
            chi = st.chi2_contingency(np.array(table))
            out["chi2"] = {"statistic": float(chi.statistic), "p_value": float(chi.pvalue), "dof": int(chi.dof)}
    detector = drift.ADWIN(delta=0.002)
    detections = []
    for position, error in enumerate(version["errors"], start=1):
        detector.update(float(error))
        if detector.drift_detected:
            detections.append(position)
    out["adwin_change_points"] = detections
    return out


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as handle:
        data = json.load(handle)
    result = {
        "versions": [version_reference(version) for version in data["versions"]],
        "sklearn": sklearn.__version__,
        "scipy": scipy.__version__,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
