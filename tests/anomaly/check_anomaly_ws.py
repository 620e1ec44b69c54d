"""Checks megamind's anomaly outputs through its real interfaces with independent peers:
the Python `websockets` client (topic `anomalies`) and plain HTTP (urllib).

usage: check_anomaly_ws.py --analytics ws://127.0.0.1:P/ --http http://127.0.0.1:H

It subscribes to `anomalies`, posts a noisy series with one spike and a stream of session
error messages from three families followed by one message of a new kind, then waits for:
the spike's `anomaly` update (and no anomaly elsewhere in the series), the new message's
`novel_error` update (and no known message flagged), `error_families` with the three
families, and the same over GET /v1/anomalies and /v1/error-families. Prints a JSON summary
line {"ok": ..., "checks_passed": N, ...}; exits 1 on the first failed check.
"""

import argparse
import asyncio
import json
import random
import sys
import time
import urllib.request

import websockets

WAIT = 60.0
SERIES = "it_anomaly_latency"
SPIKE_AT = 150
POINTS = 220
NOVEL = "gpu fell off the bus while loading checkpoint shard"
passed = 0


def check(condition, message):
    global passed
    if not condition:
        print(f"check_anomaly FAILED: {message}", file=sys.stderr)
        print(json.dumps({"ok": False, "checks_passed": passed, "failed": message}))
        sys.exit(1)
    passed += 1


def http(base, method, path, body=None):
    data = body.encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method=method, headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=15) as response:
        return response.status, json.loads(response.read())


def known(i):
    return [
        f"connection timeout after {100 + i} ms to db-{i % 5}",
        f"rate limit exceeded for user {i * 7} on endpoint /v1/search",
        f"token budget exhausted: used {7000 + i} of 8000 tokens",
    ][i % 3]


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--analytics", required=True)
    parser.add_argument("--http", required=True)
    args = parser.parse_args()

    async with websockets.connect(args.analytics) as ws:
        await ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "subscribe", "params": {"topics": ["anomalies"]}}))
        updates = []
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
            if message.get("id") == 1:
                check("result" in message and message["result"].get("subscribed") == ["anomalies"], f"subscribe: {message}")
                break

        rng = random.Random(5)
        base = int(time.time() * 1000) + 1000
        events = []
        for i in range(POINTS):
            value = 100.0 + rng.gauss(0.0, 2.0) + (80.0 if i == SPIKE_AT else 0.0)
            events.append({"type": "metric", "ts": base + i, "name": SERIES, "value": value, "labels": {"host": "h1"}})
        for i in range(60):
            events.append({"type": "session", "ts": base + i, "session_id": f"it-s{i % 4}", "kind": "error", "message": known(i)})
        events.append({"type": "session", "ts": base + 100, "session_id": "it-s9", "kind": "error", "message": NOVEL})
        body = "".join(json.dumps(event) + "\n" for event in events)
        status, answer = await asyncio.to_thread(http, args.http, "POST", "/v1/events", body)
        check(status == 200 and answer.get("accepted") == len(events), f"POST /v1/events: {status} {answer}")

        def seen():
            anomalies = [u for u in updates if u.get("kind") == "anomaly" and u["series"]["name"] == SERIES]
            novel = [u for u in updates if u.get("kind") == "novel_error"]
            families = [u for u in updates if u.get("kind") == "error_families"]
            return anomalies, novel, families

        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            anomalies, novel, families = seen()
            if anomalies and any(n["message"] == NOVEL for n in novel) and families:
                break
            try:
                message = json.loads(await asyncio.wait_for(ws.recv(), max(0.1, deadline - time.monotonic())))
            except asyncio.TimeoutError:
                break
            if message.get("method") == "update":
                check(message["params"]["topic"] == "anomalies", f"update on another topic: {message}")
                updates.append(message["params"]["data"])
        anomalies, novel, families = seen()
        check(anomalies, f"no anomaly update for {SERIES}; updates: {updates[:5]}")
        check([a["ts"] for a in anomalies] == [base + SPIKE_AT], f"anomalies at {[a['ts'] - base for a in anomalies]}, expected only {SPIKE_AT}")
        spike = anomalies[0]
        check(spike["verdict"] == "anomalous" and spike["combined"] >= 0.5, f"spike verdict: {spike}")
        check(spike["z"] > 5.0 and spike["reason"], f"spike z and reason: {spike}")
        check(spike["series"].get("labels") == {"host": "h1"}, f"spike series labels: {spike['series']}")
        check([n["message"] for n in novel] == [NOVEL], f"novel errors: {[n['message'] for n in novel]}")
        check(novel[0]["session_id"] == "it-s9", f"novel error session: {novel[0]}")
        latest = families[-1]["families"]
        templates = sorted(f["template"] for f in latest)
        check(len(latest) == 3, f"families: {templates}")
        check(any(t.startswith("connection timeout after") for t in templates), f"families: {templates}")
        check(all(f["count"] >= 3 and f["examples"] for f in latest), f"family counts/examples: {latest}")

    status, answer = await asyncio.to_thread(http, args.http, "GET", "/v1/anomalies")
    check(status == 200, f"GET /v1/anomalies: {status}")
    check(any(a["series"]["name"] == SERIES and a["ts"] == base + SPIKE_AT for a in answer["anomalies"]), f"/v1/anomalies: {answer}")
    check(any(n["message"] == NOVEL for n in answer["novel_errors"]), f"/v1/anomalies novel: {answer}")
    status, answer = await asyncio.to_thread(http, args.http, "GET", "/v1/error-families")
    check(status == 200 and len(answer["families"]) == 3, f"/v1/error-families: {status} {answer}")
    print(json.dumps({"ok": True, "checks_passed": passed, "spike": spike, "families": templates}))


asyncio.run(main())
