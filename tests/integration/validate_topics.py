#!/usr/bin/env python3
"""Checks messages dumped from Kafka topics against the project's JSON schemas (schemas/json).

    validate_topics.py SCHEMA_DIR SCHEMA_FILE:DUMP_FILE:KEY_RULE[:PARTITIONS] ...
    validate_topics.py SCHEMA_DIR --webhooks JSONL
    validate_topics.py SCHEMA_DIR --bodies SCHEMA_FILE JSONL

The second form checks the webhook bodies an alerter_receiver.py log (JSONL) recorded: alert.created
against fraud-alert.v1.json, alert.resolved against alert-resolved.v1.json (schema and key order).
The third checks HTTP answer bodies (tests/lib.sh fs_record_answer), one JSON document a line,
against SCHEMA_FILE (schema and top-level key order; a batch answer also: results[i].index = i and
the counts those of the results' statuses), and prints the distinct values of their "error" members
(the body's, and its batch results'), one a line, after "error codes:".

DUMP_FILE holds `kcat -f '%p\\t%o\\t%k\\t%h\\t%s\\n'` lines (tests/lib.sh fs_topic_dump). Each value
must validate against SCHEMA_FILE (draft 2020-12; $refs between the files resolved by their $id),
list its keys in the schema's order (the contract: "keys in the order listed here"), and carry the
headers schema_version (= the body's), payment_id (= the body's) and ingest_ts (milliseconds; not
on the alerter's outcomes, those with an alert_id; where the body has ingest_time, the same instant),
and a non-null alert_id in the body must be UUIDv5(payment_id, "alert") and, on fraud_alerts, the
alert_id header's value.
KEY_RULE: "payment_id" (the key is the body's payment_id) or "country" (the body's country, else
UNK). PARTITIONS (the topic's partition count): each message must be on the partition the Java
clients' partitioner (murmur2) gives its key, as every FraudShield producer does (docs/topics.md).
Prints one line per topic; exits 1 on the first file with a problem, naming the message.
"""
import datetime
import json
import os
import sys
import uuid

try:
    from jsonschema import Draft202012Validator, RefResolver
except ImportError:  # the project installs Debian's python3-jsonschema (make deps)
    sys.exit("validate_topics.py: python3-jsonschema is not installed (make deps)")


def load_schemas(d):
    store = {}
    for name in os.listdir(d):
        if name.endswith(".json"):
            with open(os.path.join(d, name)) as f:
                s = json.load(f)
            store[s["$id"]] = s
            store[name] = s
    return store


def headers_of(h):
    out = {}
    for kv in h.split(","):
        if "=" in kv:
            k, v = kv.split("=", 1)
            out[k] = v
    return out


def murmur2_partition(key, partitions):
    """The partition Kafka's Java clients (and librdkafka's murmur2_random) give a non-empty key."""
    data, m = key.encode(), 0x5BD1E995
    h = (0x9747B28C ^ len(data)) & 0xFFFFFFFF
    for i in range(0, len(data) - len(data) % 4, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    tail = data[len(data) - len(data) % 4:]
    if len(tail) >= 3:
        h ^= tail[2] << 16
    if len(tail) >= 2:
        h ^= tail[1] << 8
    if tail:
        h = ((h ^ tail[0]) * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return (h & 0x7FFFFFFF) % partitions


def epoch_ms(rfc3339):
    t = datetime.datetime.strptime(rfc3339, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc)
    return int(t.timestamp() * 1000 + 0.5)


def validator_of(store, schema_file):
    schema = store[schema_file]
    return schema, Draft202012Validator(schema, resolver=RefResolver.from_schema(schema, store=store))


def check_body(schema, validator, body):
    """None when body validates and lists its keys in the schema's order, else why."""
    errors = sorted(validator.iter_errors(body), key=lambda e: list(e.path))
    if errors:
        e = errors[0]
        return "%s at %s" % (e.message, "/".join(str(p) for p in e.path) or "(root)")
    order = list(schema["properties"])
    idx = [order.index(k) for k in body if k in order]
    if idx != sorted(idx):
        return "keys out of the schema's order: %s" % list(body)
    return None


def check_message(schema, validator, rule, partitions, line):
    part, off, key, hdrs, value = line.rstrip("\n").split("\t", 4)
    where = "partition %s offset %s" % (part, off)
    body = json.loads(value)
    problem = check_body(schema, validator, body)
    if problem:
        return "%s: %s" % (where, problem)
    h = headers_of(hdrs)
    if h.get("schema_version") != str(body["schema_version"]):
        return "%s: header schema_version %r, body %r" % (where, h.get("schema_version"), body["schema_version"])
    if h.get("payment_id") != body["payment_id"]:
        return "%s: header payment_id %r, body %r" % (where, h.get("payment_id"), body["payment_id"])
    if "outcome" in body and "alert_id" in body:  # the alerter's outcomes: no ingest request, no ingest_ts
        pass
    elif not h.get("ingest_ts", "").isdigit():
        return "%s: header ingest_ts %r is not milliseconds" % (where, h.get("ingest_ts"))
    elif "ingest_time" in body and int(h["ingest_ts"]) != epoch_ms(body["ingest_time"]):
        return "%s: header ingest_ts %s, body ingest_time %s" % (where, h["ingest_ts"], body["ingest_time"])
    if body.get("alert_id") is not None:
        derived = str(uuid.uuid5(uuid.UUID(body["payment_id"]), "alert"))
        header_due = "fraud_alerts message" in schema.get("title", "") or "alert_id" in h
        if (header_due and h.get("alert_id") != body["alert_id"]) or body["alert_id"] != derived:
            return "%s: alert_id header %r, body %r, UUIDv5(payment_id, \"alert\") %s" % (
                where, h.get("alert_id"), body["alert_id"], derived)
    want = body["payment_id"] if rule == "payment_id" else (body.get("country") or "UNK")
    if key != want:
        return "%s: key %r, expected %r (%s)" % (where, key, want, rule)
    if partitions and int(part) != murmur2_partition(key, partitions):
        return "%s: key %r on partition %s, murmur2 gives %d" % (where, key, part, murmur2_partition(key, partitions))
    return None


def check_webhooks(store, path):
    """Exit status: every body alerter_receiver.py logged matches its event's schema."""
    schemas = {"alert.created": validator_of(store, "fraud-alert.v1.json"),
               "alert.resolved": validator_of(store, "alert-resolved.v1.json")}
    counts = {}
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            problem = check_body(*schemas[r["event"]], json.loads(r["body"]))
            if problem:
                print("%s: %s delivery %s: %s" % (path, r["event"], r["delivery"], problem))
                return 1
            counts[r["event"]] = counts.get(r["event"], 0) + 1
    print("webhook bodies checked:", counts)
    return 0 if counts else 1


def check_batch(body):
    """None when a batch answer's results are in item order and its counts are theirs, else why."""
    for i, r in enumerate(body["results"]):
        if r["index"] != i:
            return "results[%d] has index %d" % (i, r["index"])
    for status in ("accepted", "rejected", "failed"):
        n = sum(r["status"] == status for r in body["results"])
        if body[status] != n:
            return "%s is %d, the results hold %d" % (status, body[status], n)
    return None


# What a schema cannot say: checked after the body validated.
BODY_CHECKS = {"batch-result.v1.json": check_batch}


def error_codes(body):
    """The "error" members of an answer and of its batch results."""
    if not isinstance(body, dict):
        return set()
    parts = [body] + [r for r in body.get("results", []) if isinstance(r, dict)]
    return {p["error"] for p in parts if "error" in p}


def check_bodies(store, schema_file, path):
    """Exit status: every body of the JSONL file validates against schema_file."""
    schema, validator = validator_of(store, schema_file)
    extra = BODY_CHECKS.get(schema_file, lambda body: None)
    n, codes = 0, set()
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            n += 1
            try:
                body = json.loads(line)
            except ValueError as e:
                problem = "not JSON (%s)" % e
            else:
                problem = check_body(schema, validator, body) or extra(body)
            if problem:
                print("%s line %d (%s): %s: %s" % (path, n, schema_file, problem, line.strip()[:300]))
                return 1
            codes |= error_codes(body)
    print("%s: %d bod%s checked against %s" % (os.path.basename(path), n, "y" if n == 1 else "ies", schema_file))
    print("error codes:")
    for c in sorted(codes):
        print(c)
    return 0 if n else 1


def main():
    store = load_schemas(sys.argv[1])
    if sys.argv[2] == "--webhooks":
        sys.exit(check_webhooks(store, sys.argv[3]))
    if sys.argv[2] == "--bodies":
        sys.exit(check_bodies(store, sys.argv[3], sys.argv[4]))
    bad = False
    for spec in sys.argv[2:]:
        schema_file, dump, rule, *count = spec.split(":")
        partitions = int(count[0]) if count else 0
        schema, validator = validator_of(store, schema_file)
        n = 0
        with open(dump) as f:
            for line in f:
                if not line.strip():
                    continue
                n += 1
                problem = check_message(schema, validator, rule, partitions, line)
                if problem:
                    print("%s (%s): %s" % (dump, schema_file, problem))
                    bad = True
                    break
        print("%s: %d message(s) checked against %s" % (os.path.basename(dump), n, schema_file))
        if n == 0:
            print("%s: no message" % dump)
            bad = True
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
