"""tcp_proxy.py LISTEN_PORT TARGET_PORT: forwards TCP connections on 127.0.0.1 (for fault tests).

SIGSTOP it to get a server that stops answering while its connections stay open (the kernel
still accepts and acknowledges: no error, no reset, keepalives answered); SIGCONT resumes."""
import socket
import sys
import threading

lport, dport = int(sys.argv[1]), int(sys.argv[2])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", lport))
s.listen(50)


def pipe(a, b):
    try:
        while True:
            d = a.recv(65536)
            if not d:
                break
            b.sendall(d)
    except OSError:
        pass
    finally:
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
    threading.Thread(target=pipe, args=(c, u), daemon=True).start()
    threading.Thread(target=pipe, args=(u, c), daemon=True).start()
