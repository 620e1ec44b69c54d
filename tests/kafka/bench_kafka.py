#!/usr/bin/env python3
"""Workload P1 through Kafka: `megamind produce` writes the file, `megamind serve` consumes it.

    bench_kafka.py MEGAMIND BROKERS EVENTS.jsonl PARTITIONS WORKERS

Prints one JSON report: produce rate (megamind produce), the independent client's own produce and
consume rates on the same broker (confluent-kafka, for scale), and megamind's consumed-and-applied
events/s from its first to its last applied message, with the largest total lag it reported.
"""
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))


def peer(*args):
    out = subprocess.run([sys.executable, os.path.join(HERE, "kafka_peer.py"), *args],
                         check=True, capture_output=True, text=True).stdout
    return out


def main(megamind, brokers, events, partitions, workers):
    lines = sum(1 for _ in open(events, "rb"))
    topic = f"bench-{time.time_ns()}"
    peer("create", brokers, topic, partitions)
    produced = json.loads(subprocess.run(
        [megamind, "produce", "--brokers", brokers, "--topic", topic, "--input", events, "--log", "warn"],
        check=True, capture_output=True, text=True).stdout)
    reference_topic = topic + "-peer"
    peer("create", brokers, reference_topic, partitions)
    client = json.loads(peer("rate", brokers, reference_topic, events, partitions))
    work = tempfile.mkdtemp()
    env = dict(os.environ)
    env.update({
        "MEGAMIND__KAFKA__ENABLED": "true",
        "MEGAMIND__KAFKA__BROKERS": brokers,
        "MEGAMIND__KAFKA__TOPICS": f'["{topic}"]',
        "MEGAMIND__KAFKA__GROUP_ID": "bench",
        "MEGAMIND__WEBSOCKET__ENABLED": "false",
        "MEGAMIND__STORE__PATH": os.path.join(work, "m.db"),
        "MEGAMIND__SERVER__HTTP_LISTEN": "127.0.0.1:18181",
    })
    server = subprocess.Popen([megamind, "serve", "--workers", workers, "--log", "warn"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = None
    max_lag = 0
    try:
        deadline = time.time() + 600
        while time.time() < deadline:
            try:
                status = json.load(urllib.request.urlopen("http://127.0.0.1:18181/v1/status", timeout=2))
            except OSError:
                time.sleep(0.05)
                continue
            kafka = status.get("kafka", {})
            applied = sum(p["processed_offset"] for p in kafka.get("partitions", []))
            max_lag = max(max_lag, kafka.get("total_lag", 0))
            now = time.time()
            if first is None and applied > 0:
                first = (now, applied)
            if applied >= lines:
                seconds = now - first[0]
                print(json.dumps({
                    "events": lines,
                    "partitions": int(partitions),
                    "workers": int(workers),
                    "megamind_produce_per_second": round(produced["events_per_second"]),
                    "client_produce_per_second": round(client["produce_per_second"]),
                    "client_consume_per_second": round(client["consume_per_second"]),
                    "megamind_consumed_per_second": round((applied - first[1]) / seconds) if seconds > 0 else None,
                    "max_total_lag": max_lag,
                    "rss_bytes": status.get("rss_bytes"),
                }, indent=2))
                return
            time.sleep(0.05)
        raise SystemExit("megamind did not consume everything in time")
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main(*sys.argv[1:])
