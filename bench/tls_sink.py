"""TLS server that reads and discards everything (bench/tls_client.py writes into it)."""
from __future__ import annotations

import socket
import ssl
import sys
import threading


def serve(conn: socket.socket, ctx: ssl.SSLContext) -> None:
    try:
        with ctx.wrap_socket(conn, server_side=True) as tls:
            while tls.recv(1 << 16):
                pass
    except (OSError, ssl.SSLError):
        pass


def main() -> None:
    cert, key = sys.argv[1], sys.argv[2]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    with socket.create_server(("127.0.0.1", 0)) as srv:
        print(srv.getsockname()[1], flush=True)
        while True:
            conn, _ = srv.accept()
            threading.Thread(target=serve, args=(conn, ctx), daemon=True).start()


if __name__ == "__main__":
    main()
