"""A netperf TCP_STREAM-like load for ``pcpd capture``: one sender, one receiver, over loopback.

    python3 net.py MIB [SEND_CPU RECV_CPU]

The receiver runs on RECV_CPU (default 1) and the sender on SEND_CPU (default
0), so socket buffers are allocated on one CPU and freed on the other: the
cross-CPU pattern of issue 11's socketpair trace, through the TCP stack.
"""

import os
import socket
import sys

CHUNK = 64 << 10


def receive(listener: socket.socket, total: int) -> None:
    conn, _ = listener.accept()
    with conn:
        got = 0
        while got < total:
            data = conn.recv(CHUNK)
            if not data:
                break
            got += len(data)


def send(port: int, total: int) -> None:
    buf = b"x" * CHUNK
    with socket.create_connection(("127.0.0.1", port)) as conn:
        for _ in range(total // CHUNK):
            conn.sendall(buf)


def main() -> None:
    mib = int(sys.argv[1])
    send_cpu, recv_cpu = (int(sys.argv[2]), int(sys.argv[3])) if len(sys.argv) > 3 else (0, 1)
    total = mib << 20
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    pid = os.fork()
    if pid == 0:
        os.sched_setaffinity(0, {send_cpu})
        send(port, total)
        os._exit(0)
    os.sched_setaffinity(0, {recv_cpu})
    receive(listener, total)
    os.waitpid(pid, 0)


if __name__ == "__main__":
    main()
