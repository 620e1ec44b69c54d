#!/usr/bin/env python3
"""Independent reference for workload P1 (see ../shared/bench/p1_events.py).

    python3 p1_reference.py EVENTS.jsonl [WINDOWS_OUT.jsonl]

Per (session_id, name): sliding event-time windows of 300,000 ms starting every
10,000 ms (aligned to the Unix epoch, half-open), count / mean / max of value, non-empty
windows only; a breach whenever the window mean of latency_ms exceeds 70.0.

Prints {"windows": N, "count_sum": N, "breaches": N} and, when asked, writes every window
as {"session_id", "name", "end", "count", "mean", "max"} (sorted) for exact comparison.
Computed from scratch with plain dictionaries; shares nothing with megamind.
"""
import json
import sys
from collections import defaultdict

LENGTH = 300_000
SLIDE = 10_000


def main(path, out_path=None):
    # (session, name, window_end) -> [count, sum, max]
    windows = defaultdict(lambda: [0, 0.0, float("-inf")])
    with open(path) as lines:
        for line in lines:
            if not line.strip():
                continue
            event = json.loads(line)
            ts, value = event["ts"], float(event["value"])
            first_end = (ts // SLIDE + 1) * SLIDE
            for end in range(first_end, first_end + LENGTH, SLIDE):
                cell = windows[(event["session_id"], event["name"], end)]
                cell[0] += 1
                cell[1] += value
                cell[2] = max(cell[2], value)
    count_sum = sum(cell[0] for cell in windows.values())
    breaches = sum(
        1 for (session, name, end), cell in windows.items() if name == "latency_ms" and cell[1] / cell[0] > 70.0
    )
    print(json.dumps({"windows": len(windows), "count_sum": count_sum, "breaches": breaches}))
    if out_path:
        with open(out_path, "w") as out:
            for (session, name, end) in sorted(windows):
                count, total, largest = windows[(session, name, end)]
                out.write(json.dumps({"session_id": session, "name": name, "end": end, "count": count,
                                      "mean": total / count, "max": largest}) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:])
