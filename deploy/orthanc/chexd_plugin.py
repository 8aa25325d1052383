# chexd_plugin.py - Orthanc Python plugin: classify every new chest radiograph with chexd.
#
# For Orthanc 1.10 with orthanc-python 4.0 (Debian 12). Loaded by orthanc.json:
#   "Plugins": ["/usr/share/orthanc/plugins/libOrthancPython.so"],
#   "PythonScript": "/etc/orthanc/chexd_plugin.py"
#
# Flow: the on-change callback only records the new instance's id in the plugin's
# SQLite store (StateDirectory/chexd-plugin.sqlite, survives Orthanc and chexd restarts)
# and returns: no REST call there (the Orthanc Book warns it can deadlock), no filter,
# no limit, so no instance is ever refused. Worker threads take due ids through a
# bounded in-memory window over the store (QueueSize ids at most, whatever the
# backlog), read the series Modality from Orthanc's index, drop other modalities
# (CT, MR, ... : nothing is written on them), GET /instances/{id}/file (transcoded by
# Orthanc to Explicit VR Little Endian when chexd cannot read the stored syntax), POST
# it to chexd over HTTPS (certificate checked against CAFile), and store the JSON
# answer on the instance as user metadata "chexd" and attachment "chexd" (both declared
# in the configuration, index >= 1024). Metadata "chexd-status" says "ok",
# "retrying (...)" or "failed...".
#
# Retries: chexd unreachable, a TLS failure, 401, 403, 404, 405, 408, 429 or 5xx mean
# "chexd is not usable now" (down, restarting, token or certificate being rotated):
# sending pauses for a capped exponential backoff with jitter (BackoffSeconds doubled
# up to MaxBackoffSeconds; a Retry-After header is honoured up to
# MaxRetryAfterSeconds) and every waiting instance is tried again afterwards, for
# RetryHorizonHours after it arrived, then recorded "failed after ...". 400, 413, 415
# and 422 (chexd refuses the file itself) are recorded "failed: ..." at once.
#
# REST routes added to Orthanc:
#   POST /chexd/instances/{id}/classify   (re)classify one instance
#   POST /chexd/studies/{id}/classify     (re)classify every CR/DX/DR instance of a study
#   POST /chexd/failed/requeue            queue every failed instance again (answers the count)
#   GET  /chexd/status                    pending, retrying and failed counts, chexd's last
#                                         error, counters, configuration in use
#
# Configuration: the "Chexd" section of the Orthanc configuration; CHEXD_URL,
# CHEXD_TOKEN, CHEXD_TOKEN_FILE and CHEXD_CA_FILE in Orthanc's environment override it
# (handy with docker-compose). Keys (defaults):
#   "Url": "http://127.0.0.1:8080/v1/predict"   https:// in production; http:// only to
#                                     a loopback address unless "AllowInsecure": true
#   "CAFile": ""                      PEM CA bundle that signed chexd's certificate
#                                     ("" = the system's CAs); the host name is checked
#   "AllowInsecure": false
#   "Token": "" / "TokenFile": ""     bearer token for chexd's api_token_file; the file is
#                                     read again whenever it changes (rotation)
#   "Modalities": ["CR", "DX", "DR"]
#   "StateDirectory": ""              the store's folder ("" = Orthanc's IndexDirectory)
#   "QueueSize": 256                  ids held in memory at once (the backlog is on disk)
#   "Workers": 1                      concurrent requests to chexd
#   "TimeoutSeconds": 60              per request to chexd
#   "RetryHorizonHours": 24           how long an instance is retried before "failed"
#   "MaxRetryAfterSeconds": 3600      longest Retry-After honoured
#   "BackoffSeconds": 2               first retry delay, doubled each time ...
#   "MaxBackoffSeconds": 60           ... up to this
#   "AcceptedTransferSyntaxes": every syntax chexd reads itself (no transcoding round
#                                     trip): Explicit/Implicit VR LE, Deflated, JPEG Baseline,
#                                     JPEG Lossless, JPEG-LS, JPEG 2000, RLE
#   "TranscodeTo": "1.2.840.10008.1.2.1"   used for every other transfer syntax ("" = send as is)

import collections
import email.utils
import ipaddress
import json
import os
import random
import sqlite3
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import orthanc

METADATA = "chexd"
STATUS = "chexd-status"
ATTACHMENT = "chexd"
STORE_FILE = "chexd-plugin.sqlite"

DEFAULTS = {
    "Url": "http://127.0.0.1:8080/v1/predict",
    "Token": "",
    "TokenFile": "",
    "CAFile": "",
    "AllowInsecure": False,
    "Modalities": ["CR", "DX", "DR"],
    "StateDirectory": "",
    "RetryHorizonHours": 24,
    "MaxRetryAfterSeconds": 3600,
    "QueueSize": 256,
    "Workers": 1,
    "TimeoutSeconds": 60,
    "BackoffSeconds": 2,
    "MaxBackoffSeconds": 60,
    "AcceptedTransferSyntaxes": [
        "1.2.840.10008.1.2",      # Implicit VR Little Endian
        "1.2.840.10008.1.2.1",    # Explicit VR Little Endian
        "1.2.840.10008.1.2.1.99", # Deflated Explicit VR Little Endian
        "1.2.840.10008.1.2.4.50", # JPEG Baseline (8-bit)
        "1.2.840.10008.1.2.4.57", # JPEG Lossless (process 14)
        "1.2.840.10008.1.2.4.70", # JPEG Lossless SV1
        "1.2.840.10008.1.2.4.80", # JPEG-LS Lossless
        "1.2.840.10008.1.2.4.81", # JPEG-LS Near-Lossless
        "1.2.840.10008.1.2.4.90", # JPEG 2000 Lossless
        "1.2.840.10008.1.2.4.91", # JPEG 2000
        "1.2.840.10008.1.2.4.201", # HTJ2K Lossless
        "1.2.840.10008.1.2.4.202", # HTJ2K Lossless RPCL
        "1.2.840.10008.1.2.4.203", # HTJ2K
        "1.2.840.10008.1.2.5",    # RLE Lossless
        # not .4.51 (chexd reads 8-bit JPEG Extended only): transcoded
    ],
    "TranscodeTo": "1.2.840.10008.1.2.1",
}

# chexd's answers that say "not usable now" (retried) rather than "this file is refused".
RETRIED_4XX = (401, 403, 404, 405, 408, 429)


def is_loopback(host):
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_config():
    """The configuration, and why the plugin refuses to send anything ("" when it does not)."""
    full = json.loads(orthanc.GetConfiguration())
    # "${ORTHANC_ADMIN_PASSWORD}" of an unset variable becomes "": say so loudly.
    empty = [u for u, pw in full.get("RegisteredUsers", {}).items() if not pw]
    if empty and full.get("AuthenticationEnabled", False):
        orthanc.LogError("chexd: RegisteredUsers %s have an EMPTY password (unset environment variable?)"
                         % ", ".join(sorted(empty)))
    cfg = dict(DEFAULTS)
    section = full.get("Chexd", {})
    if "MaxAttempts" in section:
        orthanc.LogWarning("chexd: Chexd.MaxAttempts is no longer used: instances are retried for "
                           "RetryHorizonHours (default 24)")
    unknown = sorted(set(section) - set(DEFAULTS) - {"MaxAttempts"})
    if unknown:
        orthanc.LogWarning("chexd: unknown keys in the Chexd configuration section: %s" % ", ".join(unknown))
    cfg.update({k: v for k, v in section.items() if k in DEFAULTS})
    for env, key in (("CHEXD_URL", "Url"), ("CHEXD_TOKEN", "Token"), ("CHEXD_TOKEN_FILE", "TokenFile"),
                     ("CHEXD_CA_FILE", "CAFile")):
        if os.environ.get(env):
            cfg[key] = os.environ[env]
    if not cfg["StateDirectory"]:
        cfg["StateDirectory"] = full.get("IndexDirectory") or full.get("StorageDirectory") or "OrthancStorage"
    cfg["Modalities"] = [m.upper() for m in cfg["Modalities"]]
    for key in ("QueueSize", "Workers"):
        cfg[key] = max(1, int(cfg[key]))
    for key in ("TimeoutSeconds", "BackoffSeconds", "MaxBackoffSeconds", "RetryHorizonHours",
                "MaxRetryAfterSeconds"):
        cfg[key] = max(0.0, float(cfg[key]))
    cfg["BackoffSeconds"] = max(0.1, cfg["BackoffSeconds"])
    cfg["MaxBackoffSeconds"] = max(cfg["BackoffSeconds"], cfg["MaxBackoffSeconds"])
    cfg["AllowInsecure"] = bool(cfg["AllowInsecure"])

    url = urllib.parse.urlsplit(cfg["Url"])
    if url.scheme not in ("http", "https") or not url.hostname:
        return cfg, None, "Chexd.Url %r is not an http:// or https:// URL" % cfg["Url"]
    if url.scheme == "http" and not is_loopback(url.hostname) and not cfg["AllowInsecure"]:
        return cfg, None, ("refusing to send DICOM files and the token in clear text to %s: use https:// "
                           "(with Chexd.CAFile), or set Chexd.AllowInsecure to true" % cfg["Url"])
    context = None
    if url.scheme == "https":
        try:
            context = ssl.create_default_context(cafile=cfg["CAFile"] or None)
        except (OSError, ssl.SSLError) as e:
            return cfg, None, "Chexd.CAFile %r cannot be loaded: %s" % (cfg["CAFile"], e)
    return cfg, context, ""


CFG, SSL_CONTEXT, REFUSED = load_config()


class Retryable(Exception):
    """chexd is not usable now (down, overloaded, token or certificate wrong): try later."""

    def __init__(self, message, retry_after=None):
        super().__init__(message)
        self.retry_after = retry_after


class Permanent(Exception):
    """The instance itself cannot be classified (refused by chexd, not transcodable)."""


class Gone(Exception):
    """The instance was deleted from Orthanc meanwhile."""


class TokenSource:
    """The bearer token: Token as given, or TokenFile read again whenever it changes."""

    def __init__(self, token, path):
        self.fixed, self.path = token, path
        self.lock = threading.Lock()
        self.stamp, self.value = None, ""

    def get(self):
        if self.fixed or not self.path:
            return self.fixed
        with self.lock:
            try:
                st = os.stat(self.path)
                stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
                if stamp != self.stamp:
                    with open(self.path, encoding="utf-8") as f:
                        self.value = f.read().strip()
                    self.stamp = stamp
            except OSError as e:
                raise Retryable("cannot read Chexd.TokenFile %s: %s" % (self.path, e.strerror or e))
            return self.value


TOKEN = TokenSource(CFG["Token"], CFG["TokenFile"])


class Store:
    """Instances waiting for chexd, and the ones that failed, in SQLite: survives restarts of
    Orthanc and chexd, and keeps memory flat whatever the backlog. One connection, used under
    a lock for single short statements (never across a network call)."""

    def __init__(self, path):
        self.path = path
        self.lock = threading.Lock()
        self.db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS pending (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
                        " id TEXT NOT NULL UNIQUE, first_seen REAL NOT NULL, due REAL NOT NULL,"
                        " tries INTEGER NOT NULL DEFAULT 0, state TEXT NOT NULL DEFAULT 'new',"
                        " last_error TEXT NOT NULL DEFAULT '')")
        self.db.execute("CREATE INDEX IF NOT EXISTS pending_due ON pending (due, seq)")
        self.db.execute("CREATE TABLE IF NOT EXISTS failed (id TEXT PRIMARY KEY, at REAL NOT NULL,"
                        " reason TEXT NOT NULL)")

    def _run(self, sql, args=()):
        with self.lock:
            return self.db.execute(sql, args).fetchall()

    def add(self, instance_id, now):
        """New (or requeued) instance, due now; a pending one keeps its place and history."""
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                self.db.execute("INSERT INTO pending (id, first_seen, due) VALUES (?, ?, ?)"
                                " ON CONFLICT(id) DO UPDATE SET due = MIN(due, excluded.due)",
                                (instance_id, now, now))
                self.db.execute("DELETE FROM failed WHERE id = ?", (instance_id,))
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise

    def get(self, instance_id):
        rows = self._run("SELECT first_seen, tries, state FROM pending WHERE id = ?", (instance_id,))
        return rows[0] if rows else None

    def due(self, now, limit):
        return [r[0] for r in self._run("SELECT id FROM pending WHERE due <= ? ORDER BY due, seq LIMIT ?",
                                        (now, limit))]

    def next_due(self):
        return self._run("SELECT MIN(due) FROM pending")[0][0]

    def reschedule(self, instance_id, due, tries, error):
        self._run("UPDATE pending SET due = ?, tries = ?, state = 'retrying', last_error = ? WHERE id = ?",
                  (due, tries, error, instance_id))

    def defer_retrying(self, until, horizon_s):
        """Every instance already waiting for chexd waits until `until` (or its horizon)."""
        self._run("UPDATE pending SET due = MIN(?1, first_seen + ?2)"
                  " WHERE state = 'retrying' AND due < MIN(?1, first_seen + ?2)", (until, horizon_s))

    def all_due_now(self, now):
        self._run("UPDATE pending SET due = ? WHERE due > ?", (now, now))

    def drop(self, instance_id):
        self._run("DELETE FROM pending WHERE id = ?", (instance_id,))

    def fail(self, instance_id, now, reason):
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                self.db.execute("DELETE FROM pending WHERE id = ?", (instance_id,))
                self.db.execute("INSERT OR REPLACE INTO failed (id, at, reason) VALUES (?, ?, ?)",
                                (instance_id, now, reason))
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise

    def failed_ids(self, before, limit):
        return [r[0] for r in self._run("SELECT id FROM failed WHERE at <= ? ORDER BY at LIMIT ?",
                                        (before, limit))]

    def counts(self):
        states = dict(self._run("SELECT state, COUNT(*) FROM pending GROUP BY state"))
        failed = self._run("SELECT COUNT(*) FROM failed")[0][0]
        recent = self._run("SELECT id, at, reason FROM failed ORDER BY at DESC LIMIT 10")
        return states.get("new", 0), states.get("retrying", 0), failed, recent


class Gate:
    """Whether chexd is usable: after a failure nothing is sent until `until` (capped
    exponential backoff with jitter, or chexd's Retry-After); a success opens it again."""

    def __init__(self):
        self.lock = threading.Lock()
        self.failures = 0
        self.until = 0.0
        self.last_error = ""
        self.last_error_at = None
        self.last_ok_at = None

    def wait(self, now):
        with self.lock:
            return max(0.0, self.until - now), self.last_error

    def ok(self, now):
        with self.lock:
            self.failures, self.until, self.last_ok_at = 0, 0.0, now

    def fail(self, now, error, retry_after):
        with self.lock:
            self.failures += 1
            if retry_after is not None:
                delay = min(retry_after, CFG["MaxRetryAfterSeconds"])
            else:
                cap = min(CFG["MaxBackoffSeconds"], CFG["BackoffSeconds"] * 2 ** min(self.failures - 1, 30))
                delay = cap / 2 + random.uniform(0, cap / 2)
            self.until = max(self.until, now + delay)
            self.last_error, self.last_error_at = error, now
            return self.until

    def snapshot(self, now):
        with self.lock:
            return {
                "state": "refused" if REFUSED else ("ok" if not self.failures else "retrying"),
                "consecutive_failures": self.failures,
                "next_attempt_in_s": round(max(0.0, self.until - now), 1),
                "last_error": REFUSED or self.last_error,
                "last_error_at": iso(self.last_error_at),
                "last_ok_at": iso(self.last_ok_at),
            }


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)) if t else None


class Dispatcher:
    """Hands due instance ids to the workers through a window of at most QueueSize ids read
    from the store, so memory does not grow with the backlog. The change callback only
    calls offer(): one SQLite insert, no REST call, never refused."""

    def __init__(self, store, size):
        self.store, self.size = store, size
        self.cond = threading.Condition()
        self.window = collections.deque()
        self.inflight = set()
        self.stopping = False
        self.counters = {"received": 0, "ok": 0, "failed": 0, "retried": 0, "skipped": 0}

    def count(self, key):
        with self.cond:
            self.counters[key] += 1

    def offer(self, instance_id):
        self.store.add(instance_id, time.time())
        with self.cond:
            self.counters["received"] += 1
            self.cond.notify()

    def take(self):
        """Next due instance id (not being processed by another worker), or None to stop."""
        with self.cond:
            while not self.stopping:
                if not self.window:
                    now = time.time()
                    fresh = self.store.due(now, self.size + len(self.inflight))
                    self.window.extend(i for i in fresh if i not in self.inflight)
                    while len(self.window) > self.size:
                        self.window.pop()
                while self.window:
                    instance_id = self.window.popleft()
                    if instance_id not in self.inflight:
                        self.inflight.add(instance_id)
                        return instance_id
                nxt = self.store.next_due()
                wait = 1.0 if nxt is None else min(1.0, max(0.02, nxt - time.time()))
                self.cond.wait(wait)
            return None

    def done(self, instance_id):
        with self.cond:
            self.inflight.discard(instance_id)

    def stop(self):
        with self.cond:
            self.stopping = True
            self.cond.notify_all()

    def snapshot(self):
        with self.cond:
            return {"in_memory": len(self.window) + len(self.inflight), "in_flight": len(self.inflight),
                    "queue_size": self.size, "counters": dict(self.counters)}


STORE_ERROR = ""
try:
    os.makedirs(CFG["StateDirectory"], exist_ok=True)
    STORE = Store(os.path.join(CFG["StateDirectory"], STORE_FILE))
except (OSError, sqlite3.Error) as e:
    STORE = None
    STORE_ERROR = "cannot open the plugin's store in %s: %s" % (CFG["StateDirectory"], e)
    orthanc.LogError("chexd: " + STORE_ERROR)
GATE = Gate()
WORK = Dispatcher(STORE, CFG["QueueSize"]) if STORE else None
MODALITY_CACHE = collections.OrderedDict()   # series id -> Modality, the last 1024 series
MODALITY_LOCK = threading.Lock()


def rest_json(uri):
    return json.loads(orthanc.RestApiGet(uri))


def put_metadata(instance_id, name, value):
    orthanc.RestApiPut("/instances/%s/metadata/%s" % (instance_id, name), value)


def record_status(instance_id, status):
    try:
        put_metadata(instance_id, STATUS, status)
    except orthanc.OrthancException as e:
        # The instance may have been deleted meanwhile.
        orthanc.LogWarning("chexd: cannot record status of %s (%s): %s" % (instance_id, status, e))


def series_modality(instance_id):
    """The Modality of the instance's series, from Orthanc's index (cached per series: one
    lookup for a 2,000-slice CT, not 2,000)."""
    try:
        series_id = rest_json("/instances/%s" % instance_id)["ParentSeries"]
    except orthanc.OrthancException:
        raise Gone()
    with MODALITY_LOCK:
        if series_id in MODALITY_CACHE:
            MODALITY_CACHE.move_to_end(series_id)
            return MODALITY_CACHE[series_id]
    try:
        modality = rest_json("/series/%s" % series_id).get("MainDicomTags", {}).get("Modality", "").upper()
    except orthanc.OrthancException:
        raise Gone()
    with MODALITY_LOCK:
        MODALITY_CACHE[series_id] = modality
        while len(MODALITY_CACHE) > 1024:
            MODALITY_CACHE.popitem(last=False)
    return modality


def instance_file(instance_id):
    """The DICOM file, transcoded when chexd does not read its transfer syntax."""
    try:
        syntax = orthanc.RestApiGet("/instances/%s/metadata/TransferSyntax" % instance_id).decode().strip()
    except orthanc.OrthancException:
        syntax = ""
    if syntax and CFG["TranscodeTo"] and syntax not in CFG["AcceptedTransferSyntaxes"]:
        body = json.dumps({"Transcode": CFG["TranscodeTo"], "Keep": ["SOPInstanceUID"], "Force": True})
        try:
            return orthanc.RestApiPost("/instances/%s/modify" % instance_id, body)
        except orthanc.OrthancException as e:
            raise Permanent("cannot transcode %s to %s: %s" % (syntax, CFG["TranscodeTo"], e))
    return orthanc.RestApiGet("/instances/%s/file" % instance_id)



def retry_after_seconds(value):
    """Retry-After as seconds (delta-seconds or an HTTP date), None when absent or unreadable."""
    value = (value or "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError):
        return None


def post_to_chexd(dicom):
    headers = {"Content-Type": "application/dicom", "Accept": "application/json"}
    token = TOKEN.get()
    if token:
        headers["Authorization"] = "Bearer " + token
    req = urllib.request.Request(CFG["Url"], data=dicom, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=CFG["TimeoutSeconds"], context=SSL_CONTEXT) as resp:
            body = resp.read()
    except urllib.error.HTTPError as e:
        detail = e.read()[:300].decode("utf-8", "replace").replace("\n", " ")
        hint = {401: " (check Chexd.Token/TokenFile against chexd's api_token_file)",
                403: " (check Chexd.Token/TokenFile)", 404: " (check the path of Chexd.Url)"}.get(e.code, "")
        if e.code >= 500 or e.code in RETRIED_4XX:
            raise Retryable("chexd answered %d%s: %s" % (e.code, hint, detail),
                            retry_after_seconds(e.headers.get("Retry-After")))
        GATE.ok(time.time())   # chexd works; it refuses this file
        raise Permanent("chexd answered %d: %s" % (e.code, detail))
    except urllib.error.URLError as e:
        reason = e.reason
        if isinstance(reason, ssl.SSLCertVerificationError):
            raise Retryable("TLS: the certificate of %s is not trusted (Chexd.CAFile %s): "
                            "certificate verify failed: %s"
                            % (CFG["Url"], CFG["CAFile"] or "(system CAs)", reason.verify_message or reason))
        if isinstance(reason, ssl.SSLError):
            raise Retryable("TLS handshake with %s failed: %s" % (CFG["Url"], reason))
        raise Retryable("chexd unreachable at %s: %s" % (CFG["Url"], reason))
    except OSError as e:  # reset, broken pipe, timeout while reading the answer
        raise Retryable("chexd unreachable at %s: %s" % (CFG["Url"], e))
    try:
        answer = json.loads(body)
    except ValueError:
        raise Retryable("chexd answered 200 with a body that is not JSON")
    if not isinstance(answer, dict) or not isinstance(answer.get("predictions"), list):
        raise Permanent("chexd answered without predictions")
    return answer


def fail(instance_id, now, reason):
    WORK.count("failed")
    orthanc.LogError("chexd: %s failed: %s" % (instance_id, reason))
    STORE.fail(instance_id, now, reason)
    record_status(instance_id, reason)


def wait_for_chexd(instance_id, row, now, until, error, tried):
    """The instance waits for chexd until `until`, or fails when its horizon is over."""
    first_seen, tries, state = row
    tries += 1 if tried else 0
    horizon_end = first_seen + CFG["RetryHorizonHours"] * 3600
    if now >= horizon_end:
        fail(instance_id, now, "failed after %d attempts over %.1f h: %s"
             % (tries, (now - first_seen) / 3600, error))
        return
    due = min(until, horizon_end)
    STORE.reschedule(instance_id, due, tries, error)
    if tried:
        WORK.count("retried")
    if tried or state != "retrying":
        # Written when something changed, not at every pause of a long outage.
        record_status(instance_id, "retrying (%s: %s; next attempt in %.0f s)"
                      % ("attempt %d failed" % tries if tries else "waiting for chexd", error, due - now))


def process(instance_id):
    row = STORE.get(instance_id)
    if row is None:
        return
    now = time.time()
    try:
        modality = series_modality(instance_id)
        if modality not in CFG["Modalities"]:
            # Not ours: forgotten, nothing written on the instance.
            STORE.drop(instance_id)
            WORK.count("skipped")
            return
        pause, error = GATE.wait(now)
        if pause > 0:
            wait_for_chexd(instance_id, row, now, now + pause, error, False)
            return
        answer = post_to_chexd(instance_file(instance_id))
        compact = json.dumps(answer, separators=(",", ":"), sort_keys=True)
        put_metadata(instance_id, METADATA, compact)
        orthanc.RestApiPut("/instances/%s/attachments/%s" % (instance_id, ATTACHMENT), compact)
        put_metadata(instance_id, STATUS, "ok")
        GATE.ok(time.time())
        STORE.drop(instance_id)
        WORK.count("ok")
    except Gone:
        STORE.drop(instance_id)
        orthanc.LogInfo("chexd: %s was deleted before it was classified" % instance_id)
    except Retryable as e:
        now = time.time()
        until = GATE.fail(now, str(e), e.retry_after)
        STORE.defer_retrying(until, CFG["RetryHorizonHours"] * 3600)
        log = orthanc.LogError if str(e).startswith("TLS") or " 401 " in str(e) or " 403 " in str(e) \
            else orthanc.LogWarning
        log("chexd: %s attempt %d: %s; next attempt in %.1f s" % (instance_id, row[1] + 1, e, until - now))
        wait_for_chexd(instance_id, row, now, until, str(e), True)
    except Permanent as e:
        fail(instance_id, time.time(), "failed: %s" % e)
    except orthanc.OrthancException as e:
        # Orthanc refused a REST call (instance deleted meanwhile, storage full, ...).
        fail(instance_id, time.time(), "failed: Orthanc: %s" % e)


def worker():
    while True:
        instance_id = WORK.take()
        if instance_id is None:
            return
        try:
            process(instance_id)
        except Exception as e:  # a worker must survive anything one instance does
            orthanc.LogError("chexd: %s: %r" % (instance_id, e))
            try:
                fail(instance_id, time.time(), "failed: %r" % e)
            except Exception as e2:
                orthanc.LogError("chexd: %s: cannot record the failure: %r" % (instance_id, e2))
        finally:
            WORK.done(instance_id)


THREADS = []


def on_change(change_type, level, resource_id):
    # Runs on Orthanc's change thread: record the id and return, nothing else.
    if change_type == orthanc.ChangeType.NEW_INSTANCE:
        if WORK:
            try:
                WORK.offer(resource_id)
            except sqlite3.Error as e:
                orthanc.LogError("chexd: cannot record new instance %s in %s: %s" % (resource_id, STORE.path, e))
    elif change_type == orthanc.ChangeType.ORTHANC_STARTED:
        if not WORK:
            return
        if REFUSED:
            orthanc.LogError("chexd: %s; new instances are kept in %s and sent once this is fixed"
                             % (REFUSED, STORE.path))
            return
        STORE.all_due_now(time.time())   # a restart ends every pause
        for i in range(CFG["Workers"]):
            t = threading.Thread(target=worker, name="chexd-worker-%d" % i, daemon=True)
            t.start()
            THREADS.append(t)
        new, retrying, failed, _ = STORE.counts()
        orthanc.LogWarning("chexd: %d worker(s) sending %s to %s (%s); %d pending, %d retrying, %d failed in %s"
                           % (CFG["Workers"], "/".join(CFG["Modalities"]), CFG["Url"],
                              "CA " + (CFG["CAFile"] or "system") if SSL_CONTEXT else "no TLS",
                              new, retrying, failed, STORE.path))
    elif change_type == orthanc.ChangeType.ORTHANC_STOPPED:
        if WORK:
            WORK.stop()
        # Bounded: a worker may be waiting on chexd; its thread is a daemon thread, and
        # the instance it holds stays in the store for the next start.
        for t in THREADS:
            t.join(timeout=min(CFG["TimeoutSeconds"] + 1, 10))


def answer_json(output, obj):
    output.AnswerBuffer(json.dumps(obj, indent=2), "application/json")


def unavailable(output):
    body = "chexd plugin: %s\n" % STORE_ERROR
    output.SendHttpStatus(503, body, len(body.encode()))


def classify_instance_route(output, uri, **request):
    if request["method"] != "POST":
        output.SendMethodNotAllowed("POST")
        return
    if not WORK:
        unavailable(output)
        return
    instance_id = request["groups"][0]
    try:
        series = rest_json("/instances/%s/series" % instance_id)
    except orthanc.OrthancException:
        output.SendHttpStatusCode(404)
        return
    modality = series.get("MainDicomTags", {}).get("Modality", "")
    if modality.upper() not in CFG["Modalities"]:
        body = "modality %s is not classified (Chexd.Modalities)\n" % (modality or "missing")
        output.SendHttpStatus(400, body, len(body.encode()))  # orthanc-python 4.0 wants a str here
        return
    WORK.offer(instance_id)
    record_status(instance_id, "queued")
    answer_json(output, {"queued": [instance_id]})


def classify_study_route(output, uri, **request):
    if request["method"] != "POST":
        output.SendMethodNotAllowed("POST")
        return
    if not WORK:
        unavailable(output)
        return
    study_id = request["groups"][0]
    try:
        series_list = rest_json("/studies/%s/series" % study_id)
    except orthanc.OrthancException:
        output.SendHttpStatusCode(404)
        return
    queued, skipped = [], []
    for series in series_list:
        modality = series.get("MainDicomTags", {}).get("Modality", "").upper()
        for instance_id in series.get("Instances", []):
            if modality not in CFG["Modalities"]:
                skipped.append(instance_id)
            else:
                WORK.offer(instance_id)
                record_status(instance_id, "queued")
                queued.append(instance_id)
    answer_json(output, {"queued": queued, "skipped_modality": skipped})


def requeue_failed_route(output, uri, **request):
    if request["method"] != "POST":
        output.SendMethodNotAllowed("POST")
        return
    if not WORK:
        unavailable(output)
        return
    # In slices (memory stays flat however many failed); an instance failing again meanwhile
    # is newer than `before` and not taken twice.
    before, queued = time.time(), 0
    while True:
        ids = STORE.failed_ids(before, 500)
        if not ids:
            break
        for instance_id in ids:
            WORK.offer(instance_id)
            record_status(instance_id, "queued")
        queued += len(ids)
    answer_json(output, {"queued": queued})


def status_route(output, uri, **request):
    if request["method"] != "GET":
        output.SendMethodNotAllowed("GET")
        return
    shown = {k: v for k, v in CFG.items() if k not in ("Token",)}
    shown["Token"] = "(set)" if CFG["Token"] else ""
    if not WORK:
        answer_json(output, {"error": STORE_ERROR, "config": shown})
        return
    now = time.time()
    new, retrying, failed, recent = STORE.counts()
    answer_json(output, dict(
        WORK.snapshot(), pending=new, retrying=retrying, failed=failed,
        recent_failures=[{"id": i, "at": iso(at), "reason": r} for i, at, r in recent],
        chexd=GATE.snapshot(now), store=STORE.path, config=shown))


orthanc.RegisterOnChangeCallback(on_change)
orthanc.RegisterRestCallback("/chexd/instances/([^/]+)/classify", classify_instance_route)
orthanc.RegisterRestCallback("/chexd/studies/([^/]+)/classify", classify_study_route)
orthanc.RegisterRestCallback("/chexd/failed/requeue", requeue_failed_route)
orthanc.RegisterRestCallback("/chexd/status", status_route)
