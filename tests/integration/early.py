"""Errors chexd decides from the headers, read back by clients that write the
whole body before reading the answer (Python's urllib), for several body
sizes. Usage: early.py URL TOKEN STATUS SIZE... with STATUS one of 401, 404,
405, 413, 415 (413 needs a daemon with a small max_upload_bytes). Prints one line
per size; exits 1 on the first wrong answer."""
import json
import sys
import urllib.error
import urllib.request

url, token, status = sys.argv[1], sys.argv[2], int(sys.argv[3])
sizes = [int(s) for s in sys.argv[4:]]
want_code = {401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
             413: "payload_too_large", 415: "unsupported_media_type"}[status]
path = {404: "/nope", 405: "/v1/model"}.get(status, "/v1/predict")
ctype = "text/plain" if status == 415 else "image/png"
for size in sizes:
    body = b"\x89PNG\r\n\x1a\n" + b"\0" * (size - 8)
    headers = {"Content-Type": ctype}
    if status != 401:
        headers["Authorization"] = "Bearer " + token
    req = urllib.request.Request(url + path, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            sys.exit("size %d: wanted %d, got %d" % (size, status, r.status))
    except urllib.error.HTTPError as e:
        got = e.code
        j = json.loads(e.read())
        hdr = e.headers
    except OSError as e:  # a reset or broken pipe: the bug this guards against
        sys.exit("size %d: %s: %s" % (size, type(e).__name__, e))
    assert got == status, (size, got, j)
    assert j["error"]["code"] == want_code, (size, j)
    assert hdr.get("Connection", "").lower() == "close", (size, dict(hdr))
    assert hdr.get("X-Content-Type-Options") == "nosniff", dict(hdr)
    if status == 405:
        assert hdr.get("Allow") == "GET, HEAD", dict(hdr)
    print("ok - urllib POST %s of %d bytes: %d %s, Connection: close" % (path, size, got,
                                                                        want_code))
