#!/usr/bin/env python3
"""Workload P1 through Kafka: `megamind produce` writes the file, `megamind serve` consumes it.

    bench_kafka.py MEGAMIND BROKERS EVENTS.jsonl PARTITIONS WORKERS [BROKER_PID]

Prints one JSON report: produce rate (megamind produce), the independent client's own produce and
consume rates on the same broker (confluent-kafka, for scale), and megamind's consumed-and-applied
events/s from its first to its last applied message, with the largest total lag it reported,
and the CPU seconds megamind (and, given its pid, the broker) used meanwhile: megamind's events
per CPU second say what it would sustain if the broker were not sharing its cores.
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


def cpu_seconds(pid):
    """User + system CPU seconds of process `pid` (Linux, USER_HZ = 100)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / 100.0
    except (OSError, IndexError, ValueError):
        return None


def main(megamind, brokers, events, partitions, workers, broker_pid=None):
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
                cpu_first = (cpu_seconds(server.pid), cpu_seconds(broker_pid) if broker_pid else None)
            if applied >= lines:
                seconds = now - first[0]
                cpu_last = (cpu_seconds(server.pid), cpu_seconds(broker_pid) if broker_pid else None)
                megamind_cpu = cpu_last[0] - cpu_first[0] if None not in (cpu_last[0], cpu_first[0]) else None
                broker_cpu = cpu_last[1] - cpu_first[1] if None not in (cpu_last[1], cpu_first[1]) else None
                consumed = applied - first[1]
                print(json.dumps({
                    "events": lines,
                    "partitions": int(partitions),
                    "workers": int(workers),
                    "megamind_produce_per_second": round(produced["events_per_second"]),
                    "client_produce_per_second": round(client["produce_per_second"]),
                    "client_consume_per_second": round(client["consume_per_second"]),
                    "megamind_consumed_per_second": round((applied - first[1]) / seconds) if seconds > 0 else None,
                    "max_total_lag": max_lag,
                    "megamind_cpu_seconds": megamind_cpu,
                    "broker_cpu_seconds": broker_cpu,
                    "megamind_events_per_cpu_second": round(consumed / megamind_cpu) if megamind_cpu else None,
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
