"""tcp_proxy.py LISTEN_PORT TARGET_PORT [HOLD_AFTER [HOLD_COUNT]]: forwards TCP connections on
127.0.0.1 (for fault tests).

SIGSTOP it to get a server that stops answering while its connections stay open (the kernel
still accepts and acknowledges: no error, no reset, keepalives answered); SIGCONT resumes.

HOLD_AFTER (a string): once a client has sent it on a connection (a statement's text, say), that
connection's replies are held back for ever while its requests still pass: the server gets the
statement (and a cancel request on a new connection) and answers, the client never hears. Unlike
SIGSTOP this needs no timing from the test: the statement that hangs is the one named. HOLD_COUNT:
only the first that many connections that send it are held (default: every one), so that a
client's retry on a new connection goes through."""
import socket
import sys
import threading

lport, dport = int(sys.argv[1]), int(sys.argv[2])
hold_after = sys.argv[3].encode() if len(sys.argv) > 3 else None
holds_left = [int(sys.argv[4]) if len(sys.argv) > 4 else -1]  # -1: no limit
holds_lock = threading.Lock()


def take_hold():
    """True when one more connection may be held (HOLD_COUNT)."""
    with holds_lock:
        if holds_left[0] == 0:
            return False
        holds_left[0] -= 1
        return True
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", lport))
s.listen(50)


def pipe(a, b, conn, upstream):
    """Copies a -> b. upstream: client -> server (watches for hold_after); else server -> client
    (stops forwarding once conn["held"])."""
    seen = b""
    try:
        while True:
            d = a.recv(65536)
            if not d:
                break
            announce = False
            if upstream and hold_after and not conn["held"] and not conn["passed"]:
                seen = (seen + d)[-(len(hold_after) + 65536):]
                if hold_after in seen:
                    if take_hold():
                        conn["held"] = announce = True
                    else:
                        conn["passed"] = True
            if not upstream and conn["held"]:
                continue  # swallowed: the client waits for an answer that never comes
            b.sendall(d)
            if announce:  # after the statement went on to the server
                print("holding replies", flush=True)
    except OSError:
        pass
    finally:
        if conn["held"] and not upstream:
            return  # the server's end closed: keep the client's open, it must give up by itself
        for x in (a, b):
            try:
                x.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


print("listening", flush=True)
while True:
    c, _ = s.accept()
    try:
        u = socket.create_connection(("127.0.0.1", dport))
    except OSError:
        c.close()
        continue
    conn = {"held": False, "passed": False}
    threading.Thread(target=pipe, args=(c, u, conn, True), daemon=True).start()
    threading.Thread(target=pipe, args=(u, c, conn, False), daemon=True).start()
