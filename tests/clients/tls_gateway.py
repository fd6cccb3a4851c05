"""An in-house AI gateway, as small as one can be: an HTTPS server for OpenAI-shaped requests that
forwards each to the provider (http.client over the system libssl) and answers with what came
back. Its command name is set to `oisp-gateway`, the name the tests give capture.tls_servers.

Usage: tls_gateway.py CERT KEY CA UPSTREAM_URL; prints {"port": n} once listening.
"""
import http.client
import http.server
import json
import ssl
import sys
from urllib.parse import urlsplit

CERT, KEY, CA, UPSTREAM = sys.argv[1:5]
HOP = {"host", "content-length", "connection", "accept-encoding"}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        up = urlsplit(UPSTREAM)
        conn = http.client.HTTPSConnection(up.hostname, up.port or 443, timeout=60,
                                           context=ssl.create_default_context(cafile=CA))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
        conn.request("POST", up.path + self.path[len("/v1"):] if self.path.startswith("/v1") else self.path,
                     body=body, headers=headers)
        answer = conn.getresponse()
        data = answer.read()
        conn.close()
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.getheader("Content-Type", "application/json"))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def main():
    with open("/proc/self/comm", "w") as fh:
        fh.write("oisp-gateway")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(CERT, KEY)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    print(json.dumps({"port": server.server_address[1]}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
