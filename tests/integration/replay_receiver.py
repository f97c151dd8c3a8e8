#!/usr/bin/env python3
"""A stand-in for ingest's payment API, for tests/integration/test_replay.sh.

Logs every request it accepts, in arrival order, one line each:
    P <payment_id> <timestamp>                 a payment (batch item or single)
    O <payment_id> <known_at> <outcome>        an outcome
Answers like ingest: 200 with per-item results for a batch, 202 for one payment or an outcome,
401 without the expected X-API-Key, and 503 + Retry-After for the first batch (to exercise the
replay's retry). With RECEIVER_JITTER=1 in the environment, batches wait 0-90 ms (by arrival
count) before they are logged and answered, so that concurrent requests overtake each other.
Any field named like a label (fraud, TX_FRAUD, label) in a payment is logged as
LEAK so the test can fail on it.

usage: replay_receiver.py PORT_FILE LOG_FILE API_KEY
"""
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT_FILE, LOG_FILE, API_KEY = sys.argv[1], sys.argv[2], sys.argv[3]
log = open(LOG_FILE, "a", buffering=1)
state = {"batches": 0}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall

    def log_message(self, *args):
        pass

    def reply(self, status, body, headers=None):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def payment(self, p):
        for k in p:
            if "fraud" in k.lower() or k.lower() == "label":
                log.write("LEAK %s\n" % k)
        log.write("P %s %s\n" % (p["payment_id"], p["timestamp"]))

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.headers.get("X-API-Key") != API_KEY:
            return self.reply(401, {"error": "unauthorized"})
        path = self.path
        if path == "/api/v1/payments/batch":
            state["batches"] += 1
            if state["batches"] == 1:
                return self.reply(503, {"error": "broker_unavailable"}, {"Retry-After": "1"})
            if os.environ.get("RECEIVER_JITTER") == "1":
                time.sleep(0.03 * (state["batches"] % 4))
            items = json.loads(body)
            results = []
            for i, p in enumerate(items):
                self.payment(p)
                results.append({"index": i, "status": "accepted", "payment_id": p["payment_id"]})
            return self.reply(200, {"accepted": len(items), "rejected": 0, "failed": 0,
                                    "results": results})
        if path == "/api/v1/payments":
            p = json.loads(body)
            self.payment(p)
            return self.reply(202, {"status": "accepted", "payment_id": p["payment_id"]})
        if path.startswith("/api/v1/payments/") and path.endswith("/outcome"):
            o = json.loads(body)
            pid = path.split("/")[4]
            log.write("O %s %s %s\n" % (pid, o["known_at"], o["outcome"]))
            return self.reply(202, {"status": "accepted", "payment_id": pid})
        return self.reply(404, {"error": "not_found"})


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
with open(PORT_FILE + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
os.rename(PORT_FILE + ".tmp", PORT_FILE)
server.serve_forever()
