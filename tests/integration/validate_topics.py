#!/usr/bin/env python3
"""Checks messages dumped from Kafka topics against the project's JSON schemas (schemas/json).

    validate_topics.py SCHEMA_DIR SCHEMA_FILE:DUMP_FILE:KEY_RULE ...
    validate_topics.py SCHEMA_DIR --webhooks JSONL
    validate_topics.py SCHEMA_DIR --bodies SCHEMA_FILE JSONL

The second form checks the webhook bodies an alerter_receiver.py log (JSONL) recorded: alert.created
against fraud-alert.v1.json, alert.resolved against alert-resolved.v1.json (schema and key order).
The third checks HTTP bodies, one JSON document a line, against SCHEMA_FILE, and prints the distinct
values of their "error" member (when they have one), one a line, after "error codes:".

DUMP_FILE holds `kcat -f '%p\\t%o\\t%k\\t%h\\t%s\\n'` lines (tests/lib.sh fs_topic_dump). Each value
must validate against SCHEMA_FILE (draft 2020-12; $refs between the files resolved by their $id),
list its keys in the schema's order (the contract: "keys in the order listed here"), and carry the
headers schema_version (= the body's), payment_id (= the body's) and ingest_ts (milliseconds; not
on the alerter's outcomes, source "analyst").
KEY_RULE: "payment_id" (the key is the body's payment_id) or "country" (the body's country, else
UNK). Prints one line per topic; exits 1 on the first file with a problem, naming the message.
"""
import json
import os
import sys

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


def check_message(schema, validator, rule, line):
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
    if body.get("source") == "analyst":  # the alerter's outcomes: no ingest request, no ingest_ts
        pass
    elif not h.get("ingest_ts", "").isdigit():
        return "%s: header ingest_ts %r is not milliseconds" % (where, h.get("ingest_ts"))
    want = body["payment_id"] if rule == "payment_id" else (body.get("country") or "UNK")
    if key != want:
        return "%s: key %r, expected %r (%s)" % (where, key, want, rule)
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


def check_bodies(store, schema_file, path):
    """Exit status: every body of the JSONL file validates against schema_file."""
    schema, validator = validator_of(store, schema_file)
    n, codes = 0, set()
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            n += 1
            body = json.loads(line)
            problem = check_body(schema, validator, body)
            if problem:
                print("%s line %d (%s): %s: %s" % (path, n, schema_file, problem, line.strip()[:300]))
                return 1
            if isinstance(body, dict) and "error" in body:
                codes.add(body["error"])
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
        schema_file, dump, rule = spec.split(":")
        schema, validator = validator_of(store, schema_file)
        n = 0
        with open(dump) as f:
            for line in f:
                if not line.strip():
                    continue
                n += 1
                problem = check_message(schema, validator, rule, line)
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
