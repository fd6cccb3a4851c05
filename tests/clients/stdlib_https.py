"""POST one recorded request with nothing but the standard library (http.client + ssl), so that
any Python (a pyenv build, one given another libssl through LD_LIBRARY_PATH) can run it.

Usage: stdlib_https.py URL BODY_FILE CA_FILE FIXTURE [HEADER...]; prints {"status": n, "bytes": n,
"ssl": "<the OpenSSL version the interpreter loaded>"}.
"""
import http.client
import json
import ssl
import sys
from urllib.parse import urlsplit


def main():
    url, body_file, ca_file, fixture = sys.argv[1:5]
    parts = urlsplit(url)
    with open(body_file, "rb") as fh:
        body = fh.read()
    headers = {"Content-Type": "application/json", "X-Fixture": fixture, "Connection": "close"}
    for header in sys.argv[5:]:
        name, value = header.split(":", 1)
        headers[name.strip()] = value.strip()
    conn = http.client.HTTPSConnection(parts.hostname, parts.port or 443, timeout=60,
                                       context=ssl.create_default_context(cafile=ca_file))
    conn.request("POST", parts.path + ("?" + parts.query if parts.query else ""), body=body, headers=headers)
    response = conn.getresponse()
    data = response.read()
    print(json.dumps({"status": response.status, "bytes": len(data), "ssl": ssl.OPENSSL_VERSION}))


if __name__ == "__main__":
    main()
