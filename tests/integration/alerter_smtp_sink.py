#!/usr/bin/env python3
"""A minimal SMTP server for the alerter's email test (stdlib only; smtpd is gone from Python 3.12).

    alerter_smtp_sink.py --port P --out FILE

Speaks enough SMTP for libcurl (EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT; no STARTTLS, no
AUTH) and appends every message to FILE as one JSON line {from, to, data}. Writes FILE.ready once
it listens."""
import argparse
import json
import socketserver
import threading

LOCK = threading.Lock()


def make_handler(out):
    class Handler(socketserver.StreamRequestHandler):
        def reply(self, line):
            self.wfile.write((line + "\r\n").encode())

        def read_data(self):
            lines = []
            while True:
                line = self.rfile.readline()
                if not line or line in (b".\r\n", b".\n"):
                    return b"".join(lines)
                if line.startswith(b".."):
                    line = line[1:]  # dot-unstuffing
                lines.append(line)

        def handle(self):
            sender, rcpts = None, []
            self.reply("220 sink ESMTP")
            while True:
                line = self.rfile.readline()
                if not line:
                    return
                cmd = line.decode(errors="replace").strip()
                verb = cmd.split(" ", 1)[0].upper()
                if verb == "EHLO":
                    self.reply("250-sink")
                    self.reply("250 8BITMIME")
                elif verb == "HELO":
                    self.reply("250 sink")
                elif verb == "MAIL":
                    sender, rcpts = cmd.split(":", 1)[1].strip(), []
                    self.reply("250 ok")
                elif verb == "RCPT":
                    rcpts.append(cmd.split(":", 1)[1].strip())
                    self.reply("250 ok")
                elif verb == "DATA":
                    self.reply("354 go ahead")
                    data = self.read_data().decode(errors="replace")
                    with LOCK, open(out, "a") as f:
                        f.write(json.dumps({"from": sender, "to": rcpts, "data": data}) + "\n")
                    self.reply("250 queued")
                elif verb in ("RSET", "NOOP"):
                    self.reply("250 ok")
                elif verb == "QUIT":
                    self.reply("221 bye")
                    return
                else:
                    self.reply("502 not implemented")

    return Handler


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    server = socketserver.ThreadingTCPServer(("127.0.0.1", args.port), make_handler(args.out))
    server.daemon_threads = True
    open(args.out, "a").close()
    with open(args.out + ".ready", "w") as f:
        f.write(str(args.port))
    server.serve_forever()


if __name__ == "__main__":
    main()
