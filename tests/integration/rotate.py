"""Token and certificate rotation by SIGHUP with clients connected.
Usage: rotate.py PORT PID LOG DIR. DIR holds token (in force), tokenB,
cert1.pem/key1.pem (in force as cert.pem/key.pem), cert2.pem/key2.pem.
Each step waits for the daemon's log line (never a sleep)."""
import http.client
import json
import os
import shutil
import signal
import ssl
import sys
import time

port, pid, log, d = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
PNG = open(os.path.join(os.path.dirname(__file__), "..", "data", "00000001_000.png"), "rb").read()
tok_a = open(os.path.join(d, "token")).read().strip()
tok_b = open(os.path.join(d, "tokenB")).read().strip()


def ctx(cert):
    c = ssl.create_default_context(cafile=os.path.join(d, cert))
    return c


def conn(cert):
    return http.client.HTTPSConnection("127.0.0.1", port, context=ctx(cert), timeout=60)


def sighup_and_wait(marker):
    """SIGHUP, then wait until the log holds one more line with marker."""
    n0 = open(log).read().count(marker)
    os.kill(pid, signal.SIGHUP)
    limit = time.monotonic() + 30
    while open(log).read().count(marker) <= n0:
        assert time.monotonic() < limit, "no %r in the log after SIGHUP" % marker
        time.sleep(0.05)


def predict(c, token):
    c.request("POST", "/v1/predict", body=PNG,
              headers={"Content-Type": "image/png", "Authorization": "Bearer " + token})
    r = c.getresponse()
    return r.status, dict(r.getheaders()), r.read()


def start_upload(cert, token):
    """A connection in the middle of an upload: TLS done, headers and half the body sent."""
    c = conn(cert)
    c.putrequest("POST", "/v1/predict")
    c.putheader("Content-Type", "image/png")
    c.putheader("Content-Length", str(len(PNG)))
    c.putheader("Authorization", "Bearer " + token)
    c.endheaders()
    c.send(PNG[: len(PNG) // 2])
    return c


def finish_upload(c):
    c.send(PNG[len(PNG) // 2:])
    r = c.getresponse()
    return r.status, r.read()


def wait_in_flight(n, token):
    """Waits until the daemon counts n requests in flight besides this probe."""
    limit = time.monotonic() + 30
    while True:
        c = conn("cert1.pem")
        c.request("GET", "/metrics", headers={"Authorization": "Bearer " + token})
        text = c.getresponse().read().decode()
        c.close()
        v = [ln.split()[1] for ln in text.splitlines() if ln.startswith("chexd_in_flight_requests ")]
        if int(v[0]) - 1 >= n:
            return
        assert time.monotonic() < limit, "the pending upload never reached the daemon"
        time.sleep(0.05)


def replace(src, dst):
    tmp = os.path.join(d, dst + ".tmp")
    shutil.copyfile(os.path.join(d, src), tmp)
    os.replace(tmp, os.path.join(d, dst))


# 1. Token A in force; a client mid-upload with token A.
s, h, b = predict(conn("cert1.pem"), tok_a)
assert s == 200, (s, b)
assert h.get("Strict-Transport-Security", "").startswith("max-age="), h
pending = start_upload("cert1.pem", tok_a)
wait_in_flight(1, tok_a)  # its headers were read (and its token checked)

# 2. Rotate both: token B, certificate 2.
replace("tokenB", "token")
replace("cert2.pem", "cert.pem")
replace("key2.pem", "key.pem")
sighup_and_wait("new TLS certificate for new connections")
st, body = finish_upload(pending)
assert st == 200 and len(json.loads(body)["predictions"]) == 14, (st, body[:200])
print("ok - a client connected before SIGHUP (TLS with the old certificate) finished its upload: 200")
s, _, b = predict(conn("cert2.pem"), tok_a)
assert s == 401, (s, b)
s, _, b = predict(conn("cert2.pem"), tok_b)
assert s == 200, (s, b)
print("ok - after SIGHUP: the old token gets 401, the new one 200")
try:
    predict(conn("cert1.pem"), tok_b)
    raise AssertionError("the old certificate is still served to new handshakes")
except ssl.SSLCertVerificationError:
    pass
print("ok - new handshakes get the new certificate (the old CA no longer verifies)")

# 3. Failed reloads keep the old secrets: empty token file, garbage certificate,
#    a key that does not match the certificate.
with open(os.path.join(d, "token"), "w") as f:
    f.write("\n")
with open(os.path.join(d, "cert.pem"), "w") as f:
    f.write("not a certificate\n")
sighup_and_wait("keeping the old TLS certificate")
assert "keeping the old token" in open(log).read()
s, _, b = predict(conn("cert2.pem"), tok_b)
assert s == 200, (s, b)
replace("cert1.pem", "cert.pem")  # cert1 with key2: a mismatch
sighup_and_wait("keeping the old TLS certificate")
s, _, b = predict(conn("cert2.pem"), tok_b)
assert s == 200, (s, b)
print("ok - unusable token/certificate files on SIGHUP: the old ones stay, errors logged")
