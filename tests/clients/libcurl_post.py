"""POST one recorded request through a libcurl given by path (ctypes), e.g. Debian's GnuTLS build
libcurl-gnutls.so.4, whose curl binary Debian does not ship.

Usage: libcurl_post.py LIBCURL URL BODY_FILE CA_FILE [HEADER...]; the body goes to stdout, then
a last line {"status": n, "tls": "<libcurl's version string>"}.
"""
import ctypes
import json
import sys

CURLOPT_URL = 10002
CURLOPT_POSTFIELDS = 10015
CURLOPT_POSTFIELDSIZE = 60
CURLOPT_HTTPHEADER = 10023
CURLOPT_CAINFO = 10065
CURLOPT_HTTP_VERSION = 84
CURL_HTTP_VERSION_1_1 = 2
CURLINFO_RESPONSE_CODE = 0x200002


def main():
    library, url, body_file, ca_file = sys.argv[1:5]
    curl = ctypes.CDLL(library)
    curl.curl_easy_init.restype = ctypes.c_void_p
    curl.curl_easy_setopt.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
    curl.curl_easy_perform.argtypes = [ctypes.c_void_p]
    curl.curl_easy_getinfo.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
    curl.curl_slist_append.restype = ctypes.c_void_p
    curl.curl_slist_append.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    curl.curl_version.restype = ctypes.c_char_p
    with open(body_file, "rb") as fh:
        body = fh.read()
    handle = curl.curl_easy_init()
    headers = None
    for header in ["Content-Type: application/json"] + sys.argv[5:]:
        headers = curl.curl_slist_append(headers, header.encode())
    keep = [ctypes.c_char_p(url.encode()), ctypes.c_char_p(body), ctypes.c_char_p(ca_file.encode())]
    curl.curl_easy_setopt(handle, CURLOPT_URL, ctypes.cast(keep[0], ctypes.c_void_p))
    curl.curl_easy_setopt(handle, CURLOPT_POSTFIELDSIZE, ctypes.c_void_p(len(body)))
    curl.curl_easy_setopt(handle, CURLOPT_POSTFIELDS, ctypes.cast(keep[1], ctypes.c_void_p))
    curl.curl_easy_setopt(handle, CURLOPT_CAINFO, ctypes.cast(keep[2], ctypes.c_void_p))
    curl.curl_easy_setopt(handle, CURLOPT_HTTPHEADER, ctypes.c_void_p(headers))
    curl.curl_easy_setopt(handle, CURLOPT_HTTP_VERSION, ctypes.c_void_p(CURL_HTTP_VERSION_1_1))
    code = curl.curl_easy_perform(handle)
    if code != 0:
        sys.exit("curl_easy_perform failed: %d" % code)
    status = ctypes.c_long()
    curl.curl_easy_getinfo(handle, CURLINFO_RESPONSE_CODE, ctypes.byref(status))
    sys.stdout.flush()
    print("\n" + json.dumps({"status": status.value, "tls": curl.curl_version().decode()}))


if __name__ == "__main__":
    main()
