#!/usr/bin/env python3
"""An independent Kafka client for megamind's tests (Python `confluent-kafka`).

    kafka_peer.py create BROKERS TOPIC PARTITIONS
    kafka_peer.py produce BROKERS TOPIC FILE PARTITIONS [--from N] [--to M] [--malformed-every K]
    kafka_peer.py consume BROKERS TOPIC COUNT [--timeout SECONDS]
    kafka_peer.py rate BROKERS TOPIC FILE PARTITIONS       (produce flat out, then consume it back)

`produce` writes lines [N, M) of a JSON-lines event file, each to partition
`int(session_id[1:]) % PARTITIONS` (events of a session stay in order in one partition) with the
event's `ts` as the Kafka timestamp. With --malformed-every K, after every K-th line it also writes
a malformed message to partition 0 (alternately broken JSON and an event without `ts`'s required
companion fields). It prints {"produced": n, "malformed": m}.

`consume` reads TOPIC from the beginning until COUNT messages arrived (or the timeout) and prints one
JSON object per message: partition, offset, key, value, headers.
"""
import json
import os
import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

MALFORMED = [
    b'{"type": "metric", "ts": 1700000000000, "name": "latency_ms", "value": ',
    b'{"type": "metric", "ts": 1700000000000, "value": 3.5}',
    b'{"type": "session", "ts": "yesterday", "session_id": "s1", "event": "start"}',
]



def client(settings):
    """librdkafka settings, with TLS to the broker when KAFKA_PEER_SSL_CA names a CA file."""
    ca = os.environ.get("KAFKA_PEER_SSL_CA")
    if ca:
        settings = dict(settings, **{"security.protocol": "SSL", "ssl.ca.location": ca})
    return settings

def option(args, name, default):
    if name in args:
        return args[args.index(name) + 1]
    return default


def create(brokers, topic, partitions):
    admin = AdminClient(client({"bootstrap.servers": brokers}))
    futures = admin.create_topics([NewTopic(topic, num_partitions=int(partitions), replication_factor=1)])
    for name, future in futures.items():
        future.result(30)
    # Wait until the metadata shows every partition.
    deadline = time.time() + 30
    while time.time() < deadline:
        metadata = admin.list_topics(topic, timeout=10)
        entry = metadata.topics.get(topic)
        if entry is not None and entry.error is None and len(entry.partitions) == int(partitions):
            print(json.dumps({"created": topic, "partitions": int(partitions)}))
            return
        time.sleep(0.1)
    raise SystemExit(f"topic {topic} did not appear with {partitions} partitions")


def produce(brokers, topic, path, partitions, args):
    first = int(option(args, "--from", "0"))
    last = int(option(args, "--to", str(1 << 62)))
    malformed_every = int(option(args, "--malformed-every", "0"))
    producer = Producer(client({"bootstrap.servers": brokers, "linger.ms": 20, "enable.idempotence": True}))
    failures = []

    def report(error, message):
        if error is not None:
            failures.append(str(error))

    produced = 0
    malformed = 0
    with open(path, "rb") as lines:
        for number, line in enumerate(lines):
            if number < first:
                continue
            if number >= last:
                break
            line = line.rstrip(b"\n")
            event = json.loads(line)
            partition = int(event["session_id"][1:]) % int(partitions)
            while True:
                try:
                    producer.produce(topic, value=line, key=event["session_id"].encode(),
                                     partition=partition, timestamp=int(event["ts"]), on_delivery=report)
                    break
                except BufferError:
                    producer.poll(0.05)
            produced += 1
            if malformed_every and (number + 1) % malformed_every == 0:
                bad = MALFORMED[malformed % len(MALFORMED)]
                producer.produce(topic, value=bad, partition=0, timestamp=int(event["ts"]), on_delivery=report)
                malformed += 1
            if produced % 10000 == 0:
                producer.poll(0)
    remaining = producer.flush(60)
    if remaining or failures:
        raise SystemExit(f"produce failed: {remaining} unflushed, errors {failures[:3]}")
    print(json.dumps({"produced": produced, "malformed": malformed}))


def consume(brokers, topic, count, args):
    timeout = float(option(args, "--timeout", "30"))
    consumer = Consumer(client({"bootstrap.servers": brokers, "group.id": f"peer-{time.time_ns()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False}))
    metadata = consumer.list_topics(topic, timeout=10)
    partitions = sorted(metadata.topics[topic].partitions)
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    # COUNT messages, or with COUNT = "end" everything up to each partition's end as of now.
    ends = None
    if count == "end":
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in partitions}
        ends = {p: end for p, end in ends.items() if end > 0}
        count = sys.maxsize
    got = 0
    deadline = time.time() + timeout
    while got < int(count) and time.time() < deadline:
        if ends is not None and not ends:
            break
        message = consumer.poll(0.5)
        if message is None:
            continue
        if message.error():
            raise SystemExit(f"consume error: {message.error()}")
        if ends is not None:
            if message.partition() not in ends:
                continue
            if message.offset() + 1 >= ends[message.partition()]:
                del ends[message.partition()]
        headers = {k: (v.decode() if v is not None else None) for k, v in (message.headers() or [])}
        print(json.dumps({
            "partition": message.partition(),
            "offset": message.offset(),
            "key": message.key().decode() if message.key() else None,
            "value": message.value().decode(errors="replace") if message.value() else None,
            "headers": headers,
        }))
        got += 1
    consumer.close()
    if ends:
        raise SystemExit(f"{topic}: partitions {sorted(ends)} not read to their end in {timeout} s")


def rate(brokers, topic, path, partitions):
    start = time.time()
    sys.stdout = open("/dev/null", "w")
    produce(brokers, topic, path, partitions, [])
    produced_s = time.time() - start
    lines = sum(1 for _ in open(path, "rb"))
    consumer = Consumer(client({"bootstrap.servers": brokers, "group.id": f"rate-{time.time_ns()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False}))
    consumer.assign([TopicPartition(topic, p, 0) for p in range(int(partitions))])
    got = 0
    start = time.time()
    while got < lines:
        batch = consumer.consume(10000, 1.0)
        got += sum(1 for m in batch if not m.error())
    consumed_s = time.time() - start
    sys.stdout = sys.__stdout__
    print(json.dumps({"messages": lines, "produce_per_second": lines / produced_s,
                      "consume_per_second": lines / consumed_s}))


def main(argv):
    if len(argv) < 2:
        raise SystemExit(__doc__)
    command, args = argv[1], argv[2:]
    if command == "create":
        create(*args[:3])
    elif command == "produce":
        produce(*args[:4], args[4:])
    elif command == "consume":
        consume(*args[:3], args[3:])
    elif command == "rate":
        rate(*args[:4])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
