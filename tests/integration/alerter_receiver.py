#!/usr/bin/env python3
"""A webhook receiver for the alerter's integration tests (stdlib only).

    alerter_receiver.py --port P --secret S --log FILE --mode MODE [--tls-cert C --tls-key K]

MODE:
  ok               200 when the signature verifies, else 401
  fail:N[:RA]      the first N requests of each delivery id get 503 (with Retry-After: RA when
                   given), later ones behave like ok
  hang             accepts the request and never answers
  status:CODE      always CODE (e.g. 410)

Every request is appended to FILE as one JSON line: time, method, path, the X-FraudShield-*
headers, whether the signatures verify (v1: HMAC-SHA256 over timestamp + "." + body; v2: over
timestamp "." delivery id "." event type "." body; both compared in constant time) and the timestamp is fresh (+- 300 s), the alert_id inside the body, the body itself, and the
status answered (null while hanging). Writes FILE.ready once it listens.
"""
import argparse
import hashlib
import hmac
import json
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
ATTEMPTS = {}


def verify(secret, headers, body):
    """Both signatures must verify: v1 (timestamp.body) and v2 (timestamp.delivery.event.body)."""
    ts = headers.get("X-FraudShield-Timestamp", "")
    sig = headers.get("X-FraudShield-Signature", "")
    want = "sha256=" + hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    msg2 = ".".join([ts, headers.get("X-FraudShield-Delivery", ""), headers.get("X-FraudShield-Event", "")])
    want2 = "v2=" + hmac.new(secret.encode(), msg2.encode() + b"." + body, hashlib.sha256).hexdigest()
    sig2 = headers.get("X-FraudShield-Signature-V2", "")
    fresh = ts.isdigit() and abs(time.time() - int(ts)) <= 300
    return hmac.compare_digest(want, sig) and hmac.compare_digest(want2, sig2), fresh


def make_handler(args):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *a):  # quiet: the JSON log is the record
            pass

        def record(self, entry):
            with LOCK, open(args.log, "a") as f:
                f.write(json.dumps(entry) + "\n")

        def answer(self, code, retry_after=None):
            body = b'{"ok":%s}' % (b"true" if code < 300 else b"false")
            self.send_response(code)
            if retry_after is not None:
                self.send_header("Retry-After", retry_after)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            n = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(n)
            sig_ok, fresh = verify(args.secret, self.headers, body)
            try:
                body_alert = json.loads(body).get("alert_id")
            except ValueError:
                body_alert = None
            delivery = self.headers.get("X-FraudShield-Delivery", "")
            with LOCK:
                ATTEMPTS[delivery] = ATTEMPTS.get(delivery, 0) + 1
                seen = ATTEMPTS[delivery]
            code, retry_after, mode = 200, None, args.mode.split(":")
            if mode[0] == "hang":
                code = None
            elif mode[0] == "status":
                code = int(mode[1])
            elif mode[0] == "fail" and seen <= int(mode[1]):
                code = 503
                retry_after = mode[2] if len(mode) > 2 else None
            elif not (sig_ok and fresh):
                code = 401
            self.record({
                "t": time.time(), "path": self.path, "event": self.headers.get("X-FraudShield-Event"),
                "delivery": delivery, "alert": self.headers.get("X-FraudShield-Alert"),
                "attempt": self.headers.get("X-FraudShield-Attempt"), "seen": seen,
                "sig_ok": sig_ok, "fresh": fresh, "body_alert": body_alert,
                "content_type": self.headers.get("Content-Type"), "status": code,
                "body": body.decode("utf-8", "replace"),
            })
            if code is None:
                time.sleep(3600)  # daemon thread: dies with the server
                return
            self.answer(code, retry_after)

    return Handler


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--secret", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--mode", default="ok")
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    args = p.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(args))
    server.daemon_threads = True
    if args.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    open(args.log, "a").close()
    with open(args.log + ".ready", "w") as f:
        f.write(str(args.port))
    server.serve_forever()


if __name__ == "__main__":
    main()
