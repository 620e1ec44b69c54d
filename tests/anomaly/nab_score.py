"""Independent NAB scorer: the oracle of `megamind nab`.

Usage: nab_score.py DATA_DIR LABELS.json REPORT.json

REPORT.json is `megamind nab --json` output; only its per-file `detections` (row indices)
and profile weights are taken from it. Everything else (reading the CSV files, mapping
windows to rows, the probationary period, the sweep scores, null and perfect detectors and
the normalisation) is recomputed here, following NAB's sweeper.py: points are walked in
time order, a point inside a window gets scaledSigmoid(-(right - i + 1) / width) * tp /
maxTP, a point outside gets scaledSigmoid(|i - prevRight| / (prevWidth - 1)) * fp (or -fp
with no preceding window), probationary points are dropped, each window keeps the max of
its detected points (initially -fn) and false positives add up.

Prints a JSON object {"files": {name: raw}, "raw", "null", "perfect", "normalised"}.
"""

import csv
import datetime
import json
import math
import os
import sys


def parse_ts(text):
    text = text.strip().replace("T", " ")
    for fmt in ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S"):
        try:
            return datetime.datetime.strptime(text, fmt)
        except ValueError:
            pass
    raise ValueError(f"bad timestamp {text!r}")


def scaled_sigmoid(x):
    if x > 3.0:
        return -1.0
    return 2.0 * (1.0 / (1.0 + math.exp(5.0 * x))) - 1.0


def probation(n):
    return int(min(math.floor(0.15 * n), 0.15 * 5000))


def sweep(timestamps, windows, tp_w, fp_w):
    """Per point: (weighted score, window name or None or 'probationary')."""
    max_tp = scaled_sigmoid(-1.0)
    prob = probation(len(timestamps))
    limits = [w for w in windows]
    points = []
    cur = None
    prev_right = prev_width = None
    for i, t in enumerate(timestamps):
        if cur is None and limits and t >= limits[0][0]:
            start, end = limits.pop(0)
            # Rows in file order from here while they stay within the window.
            right = i
            while right < len(timestamps) and timestamps[right] <= end:
                right += 1
            if right > i:
                cur = (start, end, right - 1, float(right - i))
        if cur is not None:
            _, end, right, width = cur
            weighted = scaled_sigmoid(-(right - i + 1) / width) * tp_w / max_tp
            name = f"w{cur[0]}"
        else:
            if prev_right is None or prev_width <= 1:
                unweighted = -1.0
            else:
                unweighted = scaled_sigmoid(abs(prev_right - i) / (prev_width - 1))
            weighted = unweighted * fp_w
            name = None
        points.append((weighted, name if i >= prob else "probationary"))
        if cur is not None and i == cur[2]:
            prev_right, prev_width = cur[2], cur[3]
            cur = None
    return points


def score(points, detected, fn_w):
    scorable = [(p, d) for p, d in zip(points, detected) if p[1] != "probationary"]
    parts = {}
    for (weighted, name), _ in scorable:
        if name is not None:
            parts[name] = -fn_w
    fp = 0.0
    for (weighted, name), hit in scorable:
        if not hit:
            continue
        if name is None:
            fp += weighted
        else:
            parts[name] = max(parts[name], weighted)
    return fp + sum(parts.values())


def main():
    data_dir, labels_path, report_path = sys.argv[1:4]
    labels = json.load(open(labels_path))
    report = json.load(open(report_path))
    w = report["weights"]
    tp_w, fp_w, fn_w = w["tp"], w["fp"], w["fn_"]
    out = {"files": {}}
    raw_total = null_total = perfect_total = 0.0
    for entry in report["files"]:
        name = entry["file"]
        with open(os.path.join(data_dir, name)) as handle:
            rows = list(csv.DictReader(handle))
        timestamps = [parse_ts(r["timestamp"]) for r in rows]
        key = name if name in labels else os.path.basename(name)
        windows = sorted((parse_ts(a), parse_ts(b)) for a, b in labels[key])
        points = sweep(timestamps, windows, tp_w, fp_w)
        hits = set(entry["detections"])
        detected = [i in hits for i in range(len(timestamps))]
        raw = score(points, detected, fn_w)
        null = score(points, [False] * len(points), fn_w)
        # Perfect: the first non-probationary point of every window.
        perfect_hits = [False] * len(points)
        seen = set()
        for i, (_, window) in enumerate(points):
            if window not in (None, "probationary") and window not in seen:
                seen.add(window)
                perfect_hits[i] = True
        perfect = score(points, perfect_hits, fn_w)
        out["files"][name] = raw
        raw_total += raw
        null_total += null
        perfect_total += perfect
    out["raw"] = raw_total
    out["null"] = null_total
    out["perfect"] = perfect_total
    span = perfect_total - null_total
    out["normalised"] = 100.0 * (raw_total - null_total) / span if span else None
    print(json.dumps(out))


if __name__ == "__main__":
    main()
