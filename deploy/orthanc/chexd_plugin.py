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
# Results as DICOM (docs/API.md "Results as DICOM"): with StoreSR (default on) the worker
# also asks chexd for the Structured Report (POST Url with Accept: application/dicom, the
# same file), with StoreSC (default off) for the Secondary Capture heat map of SCLabel (""
# = the most probable label; POST ExplainUrl?label=...), and stores them in Orthanc
# (POST /instances): each a new series in the source's study. The source's metadata
# "chexd-results" names them ({"sr": id, "sc": id, "label": ...}); a reclassification
# replaces them (the previous ones are deleted from Orthanc). Never classified, whatever
# Modalities says, so the plugin never classifies its own output: the modalities SR, OT,
# SC, KO, PR, SEG, DOC, every series whose Manufacturer is "chexd" (chexd's SR and SC), and
# SR SOP classes (1.2.840.10008.5.1.4.1.1.88.*). A Secondary Capture with Modality CR or DX
# (digitised film; SIIM's radiographs) is a radiograph and is classified.
#
# Forwarding: ForwardTo lists destinations, each a DICOM modality of Orthanc's
# DicomModalities (sent by C-STORE: POST /modalities/NAME/store) or a server of the
# DICOMweb plugin's Servers (STOW-RS: POST /dicom-web/servers/NAME/stow); a bare name is
# looked up in both, "modality:NAME" / "dicomweb:NAME" says which. Every stored result is
# sent to every destination by a forwarding thread, as an Orthanc job (submitted, then
# polled: no REST call waits on the remote side), with the classification's retry
# bookkeeping: a failing destination pauses (BackoffSeconds doubled up to
# MaxBackoffSeconds, per destination) and its objects are retried for RetryHorizonHours,
# then recorded "failed after ...". The pending sends are in the store (table forward), so
# they survive restarts. The source's metadata "chexd-forward" says, per destination and
# object, "queued", "ok", "retrying (...)" or "failed ...".
#
# REST routes added to Orthanc:
#   POST /chexd/instances/{id}/classify   (re)classify one instance
#   POST /chexd/studies/{id}/classify     (re)classify every CR/DX/DR instance of a study
#   POST /chexd/failed/requeue            queue every failed instance and failed forward again
#                                         (answers the counts)
#   GET  /chexd/status                    pending, retrying and failed counts, chexd's last
#                                         error, counters, forwarding state, configuration
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
#   "StoreSR": true                   store chexd's Structured Report in the study
#   "StoreSC": false                  store chexd's Secondary Capture heat map in the study
#   "SCLabel": ""                     the label the SC shows ("" = the most probable one)
#   "ExplainUrl": ""                  chexd's explain route ("" = Url with /predict -> /explain)
#   "ForwardTo": []                   destinations of the stored SR/SC (see above)
#   "ForwardTimeoutSeconds": 120      longest wait for one forwarding job

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
RESULTS = "chexd-results"
FORWARD = "chexd-forward"
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
    "StoreSR": True,
    "StoreSC": False,
    "SCLabel": "",
    "ExplainUrl": "",
    "ForwardTo": [],
    "ForwardTimeoutSeconds": 120,
}

# Never classified, whatever Modalities says: results (chexd's own SR and SC among them),
# presentation states, key objects, documents.
NEVER_CLASSIFIED = ("SR", "OT", "SC", "KO", "PR", "SEG", "DOC")
SR_CLASS_PREFIX = "1.2.840.10008.5.1.4.1.1.88."
CHEXD_MANUFACTURER = "chexd"   # Manufacturer of every SR and SC chexd writes

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
    never = [m for m in cfg["Modalities"] if m in NEVER_CLASSIFIED]
    if never:
        orthanc.LogWarning("chexd: Chexd.Modalities %s ignored: results and documents are never classified"
                           % ", ".join(never))
        cfg["Modalities"] = [m for m in cfg["Modalities"] if m not in NEVER_CLASSIFIED]
    for key in ("StoreSR", "StoreSC"):
        cfg[key] = bool(cfg[key])
    forward = cfg["ForwardTo"]
    cfg["ForwardTo"] = [forward] if isinstance(forward, str) else [str(d) for d in forward or [] if str(d).strip()]
    if cfg["ForwardTo"] and not (cfg["StoreSR"] or cfg["StoreSC"]):
        orthanc.LogWarning("chexd: Chexd.ForwardTo is set but StoreSR and StoreSC are off: nothing to forward")
    cfg["ForwardTimeoutSeconds"] = max(1.0, float(cfg["ForwardTimeoutSeconds"]))
    cfg["SCLabel"] = str(cfg["SCLabel"] or "")
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
    if not cfg["ExplainUrl"]:
        path = url.path[:-len("/predict")] + "/explain" if url.path.endswith("/predict") else "/v1/explain"
        cfg["ExplainUrl"] = urllib.parse.urlunsplit((url.scheme, url.netloc, path, "", ""))
    explain = urllib.parse.urlsplit(cfg["ExplainUrl"])
    if (explain.scheme, explain.netloc) != (url.scheme, url.netloc):
        return cfg, None, "Chexd.ExplainUrl %r must be on the same server as Chexd.Url" % cfg["ExplainUrl"]
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
        # One row per (stored result, destination) still to send, or failed (state 'failed').
        self.db.execute("CREATE TABLE IF NOT EXISTS forward (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
                        " object TEXT NOT NULL, dest TEXT NOT NULL, source TEXT NOT NULL, kind TEXT NOT NULL,"
                        " first_seen REAL NOT NULL, due REAL NOT NULL, tries INTEGER NOT NULL DEFAULT 0,"
                        " state TEXT NOT NULL DEFAULT 'new', last_error TEXT NOT NULL DEFAULT '',"
                        " UNIQUE (object, dest))")
        self.db.execute("CREATE INDEX IF NOT EXISTS forward_due ON forward (state, due, seq)")

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

    # ---- forwarding: rows (seq, object, dest, source, kind, first_seen, tries, state)
    def fwd_add(self, obj, dest, source, kind, now):
        self._run("INSERT INTO forward (object, dest, source, kind, first_seen, due) VALUES (?, ?, ?, ?, ?, ?)"
                  " ON CONFLICT(object, dest) DO UPDATE SET due = ?6, state = 'new', tries = 0,"
                  " first_seen = ?5, last_error = ''", (obj, dest, source, kind, now, now))

    def fwd_due(self, now, limit):
        return self._run("SELECT seq, object, dest, source, kind, first_seen, tries, state FROM forward"
                         " WHERE state != 'failed' AND due <= ? ORDER BY due, seq LIMIT ?", (now, limit))

    def fwd_next_due(self):
        return self._run("SELECT MIN(due) FROM forward WHERE state != 'failed'")[0][0]

    def fwd_reschedule(self, seq, due, tries, error):
        self._run("UPDATE forward SET due = ?, tries = ?, state = 'retrying', last_error = ? WHERE seq = ?",
                  (due, tries, error, seq))

    def fwd_drop(self, seq):
        self._run("DELETE FROM forward WHERE seq = ?", (seq,))

    def fwd_fail(self, seq, now, reason):
        self._run("UPDATE forward SET state = 'failed', due = ?, last_error = ? WHERE seq = ?", (now, reason, seq))

    def fwd_requeue_failed(self, now):
        with self.lock:
            return self.db.execute("UPDATE forward SET state = 'new', due = ?, tries = 0, first_seen = ?"
                                   " WHERE state = 'failed'", (now, now)).rowcount

    def fwd_all_due_now(self, now):
        self._run("UPDATE forward SET due = ? WHERE state != 'failed' AND due > ?", (now, now))

    def fwd_counts(self):
        states = dict(self._run("SELECT state, COUNT(*) FROM forward GROUP BY state"))
        recent = self._run("SELECT source, object, kind, dest, due, last_error FROM forward WHERE state = 'failed'"
                           " ORDER BY due DESC LIMIT 10")
        return states.get("new", 0), states.get("retrying", 0), states.get("failed", 0), recent


class Gate:
    """Whether chexd (or a forwarding destination) is usable: after a failure nothing is sent
    until `until` (capped exponential backoff with jitter, or chexd's Retry-After); a success
    opens it again."""

    def __init__(self, chexd=True):
        self.chexd = chexd   # chexd's gate (refused when the configuration is), or a destination's
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
                "state": "refused" if REFUSED and self.chexd else ("ok" if not self.failures else "retrying"),
                "consecutive_failures": self.failures,
                "next_attempt_in_s": round(max(0.0, self.until - now), 1),
                "last_error": (REFUSED if self.chexd else "") or self.last_error,
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


def series_of(instance_id):
    """(Modality, Manufacturer) of the instance's series, from Orthanc's index (cached per
    series: one lookup for a 2,000-slice CT, not 2,000)."""
    try:
        series_id = rest_json("/instances/%s" % instance_id)["ParentSeries"]
    except orthanc.OrthancException:
        raise Gone()
    with MODALITY_LOCK:
        if series_id in MODALITY_CACHE:
            MODALITY_CACHE.move_to_end(series_id)
            return MODALITY_CACHE[series_id]
    try:
        tags = rest_json("/series/%s" % series_id).get("MainDicomTags", {})
    except orthanc.OrthancException:
        raise Gone()
    found = (tags.get("Modality", "").upper(), tags.get("Manufacturer", "").strip())
    with MODALITY_LOCK:
        MODALITY_CACHE[series_id] = found
        while len(MODALITY_CACHE) > 1024:
            MODALITY_CACHE.popitem(last=False)
    return found


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


def chexd_call(url, body, accept):
    """POST the DICOM file to chexd; the answer's body. Retryable when chexd is not usable
    now, Permanent when it refuses this file."""
    headers = {"Content-Type": "application/dicom", "Accept": accept}
    token = TOKEN.get()
    if token:
        headers["Authorization"] = "Bearer " + token
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=CFG["TimeoutSeconds"], context=SSL_CONTEXT) as resp:
            return resp.read()
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
                            % (url, CFG["CAFile"] or "(system CAs)", reason.verify_message or reason))
        if isinstance(reason, ssl.SSLError):
            raise Retryable("TLS handshake with %s failed: %s" % (url, reason))
        raise Retryable("chexd unreachable at %s: %s" % (url, reason))
    except OSError as e:  # reset, broken pipe, timeout while reading the answer
        raise Retryable("chexd unreachable at %s: %s" % (url, e))


def classify(dicom):
    body = chexd_call(CFG["Url"], dicom, "application/json")
    try:
        answer = json.loads(body)
    except ValueError:
        raise Retryable("chexd answered 200 with a body that is not JSON")
    if not isinstance(answer, dict) or not isinstance(answer.get("predictions"), list):
        raise Permanent("chexd answered without predictions")
    return answer


def result_object(url, dicom, what):
    """chexd's SR or SC of the file (Accept: application/dicom): a Part 10 file."""
    body = chexd_call(url, dicom, "application/dicom")
    if body[128:132] != b"DICM":
        raise Retryable("chexd answered 200 to the %s request with a body that is not a DICOM file" % what)
    return body


def top_label(answer):
    best = max(answer["predictions"], key=lambda p: p.get("probability", 0.0), default=None)
    if not best or not best.get("label"):
        raise Permanent("chexd answered without a label to draw")
    return best["label"]


def next_attempt(first_seen, tries, now, until, tried):
    """The retry bookkeeping shared by classification and forwarding: the attempts made, and
    when the item is tried next: `until` (the end of a pause) capped by the end of its
    RetryHorizonHours, or None when the horizon is over (it fails)."""
    tries += 1 if tried else 0
    horizon_end = first_seen + CFG["RetryHorizonHours"] * 3600
    if now >= horizon_end:
        return tries, None
    return tries, min(until, horizon_end)


def failed_after(tries, first_seen, now, error):
    return "failed after %d attempts over %.1f h: %s" % (tries, (now - first_seen) / 3600, error)


def retrying(tries, what, error, due, now):
    return "retrying (%s: %s; next attempt in %.0f s)" % (
        "attempt %d failed" % tries if tries else "waiting for " + what, error, due - now)


def fail(instance_id, now, reason):
    WORK.count("failed")
    orthanc.LogError("chexd: %s failed: %s" % (instance_id, reason))
    STORE.fail(instance_id, now, reason)
    record_status(instance_id, reason)


def wait_for_chexd(instance_id, row, now, until, error, tried):
    """The instance waits for chexd until `until`, or fails when its horizon is over."""
    first_seen, tries, state = row
    tries, due = next_attempt(first_seen, tries, now, until, tried)
    if due is None:
        fail(instance_id, now, failed_after(tries, first_seen, now, error))
        return
    STORE.reschedule(instance_id, due, tries, error)
    if tried:
        WORK.count("retried")
    if tried or state != "retrying":
        # Written when something changed, not at every pause of a long outage.
        record_status(instance_id, retrying(tries, "chexd", error, due, now))


def classifiable(instance_id):
    """Whether the instance is a chest radiograph to classify: its series' Modality in
    Modalities (never SR, OT, ...), not made by chexd (Manufacturer "chexd": our own SR and
    SC, whatever their modality), not of an SR SOP class. A Secondary Capture with Modality
    CR (film digitised, datasets such as SIIM's) is a radiograph and is classified."""
    modality, manufacturer = series_of(instance_id)
    if modality not in CFG["Modalities"] or manufacturer == CHEXD_MANUFACTURER:
        return False
    try:
        sop_class = orthanc.RestApiGet("/instances/%s/metadata/SopClassUid" % instance_id).decode().strip()
    except orthanc.OrthancException:
        sop_class = ""
    return not sop_class.startswith(SR_CLASS_PREFIX)


def make_results(dicom, answer):
    """chexd's SR and SC of the file, as configured: {kind: bytes}, the SC's label, and why
    an object could not be made (chexd refused it: the JSON result stands)."""
    objects, label, notes = {}, "", []
    if CFG["StoreSR"]:
        try:
            objects["sr"] = result_object(CFG["Url"], dicom, "SR")
        except Permanent as e:
            notes.append("no SR: %s" % e)
    if CFG["StoreSC"]:
        try:
            label = CFG["SCLabel"] or top_label(answer)
            url = CFG["ExplainUrl"] + "?" + urllib.parse.urlencode({"label": label})
            objects["sc"] = result_object(url, dicom, "SC")
        except Permanent as e:
            notes.append("no SC: %s" % e)
    return objects, label, notes


def store_results(instance_id, objects, label):
    """Stores the SR/SC in Orthanc (the study carries them), replacing the ones of an earlier
    classification; queues them for every ForwardTo destination."""
    try:
        previous = json.loads(orthanc.RestApiGet("/instances/%s/metadata/%s" % (instance_id, RESULTS)))
    except (orthanc.OrthancException, ValueError):
        previous = {}
    stored = {}
    for kind, body in objects.items():
        stored[kind] = json.loads(orthanc.RestApiPost("/instances", body))["ID"]
    if not stored and not previous:
        return stored
    results = dict(stored, label=label) if label else dict(stored)
    try:
        put_metadata(instance_id, RESULTS, json.dumps(results, sort_keys=True))
    except orthanc.OrthancException as e:
        # An orthanc.json of an earlier version: the objects are stored, only not named.
        orthanc.LogError("chexd: cannot record %s on %s (declare \"%s\": 1026 and \"%s\": 1027 in "
                         "UserMetadata): %s" % (RESULTS, instance_id, RESULTS, FORWARD, e))
    for kind in ("sr", "sc"):
        old = previous.get(kind) if isinstance(previous, dict) else None
        if old and old not in stored.values():
            try:
                orthanc.RestApiDelete("/instances/%s" % old)
            except orthanc.OrthancException:
                pass   # already deleted by someone else
    if stored and CFG["ForwardTo"]:
        now = time.time()
        with FORWARD_META_LOCK:
            try:
                put_metadata(instance_id, FORWARD, json.dumps(
                    {d: {k: "queued" for k in stored} for d in CFG["ForwardTo"]}, sort_keys=True))
            except orthanc.OrthancException as e:
                orthanc.LogError("chexd: cannot record %s on %s: %s" % (FORWARD, instance_id, e))
        for dest in CFG["ForwardTo"]:
            for kind, obj in stored.items():
                STORE.fwd_add(obj, dest, instance_id, kind, now)
        FORWARDER.wake()
    return stored


def process(instance_id):
    row = STORE.get(instance_id)
    if row is None:
        return
    now = time.time()
    try:
        if not classifiable(instance_id):
            # Not ours: forgotten, nothing written on the instance.
            STORE.drop(instance_id)
            WORK.count("skipped")
            return
        pause, error = GATE.wait(now)
        if pause > 0:
            wait_for_chexd(instance_id, row, now, now + pause, error, False)
            return
        dicom = instance_file(instance_id)
        answer = classify(dicom)
        objects, label, notes = make_results(dicom, answer)
        compact = json.dumps(answer, separators=(",", ":"), sort_keys=True)
        put_metadata(instance_id, METADATA, compact)
        orthanc.RestApiPut("/instances/%s/attachments/%s" % (instance_id, ATTACHMENT), compact)
        store_results(instance_id, objects, label)
        for note in notes:
            orthanc.LogWarning("chexd: %s: %s" % (instance_id, note))
        put_metadata(instance_id, STATUS, "ok" + (" (%s)" % "; ".join(notes) if notes else ""))
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


# ---- forwarding the stored results to the hospital's PACS --------------------------------

FORWARD_META_LOCK = threading.Lock()   # read-modify-write of a source's "chexd-forward"
JOB_DONE = ("Success", "Failure")


def destination(dest):
    """("modality" | "dicomweb", name) of a ForwardTo entry: "modality:NAME", "dicomweb:NAME",
    or a bare name looked up in Orthanc's DicomModalities, then in the DICOMweb Servers."""
    kind, sep, name = dest.partition(":")
    if sep and kind in ("modality", "dicomweb"):
        return kind, name
    try:
        if dest in rest_json("/modalities"):
            return "modality", dest
    except orthanc.OrthancException:
        pass
    try:
        if dest in json.loads(orthanc.RestApiGetAfterPlugins("/dicom-web/servers")):
            return "dicomweb", dest
    except (orthanc.OrthancException, ValueError):
        pass
    raise Retryable("%r is neither in Orthanc's DicomModalities nor in the DICOMweb plugin's Servers" % dest)


def job_state(job_id):
    try:
        return rest_json("/jobs/%s" % job_id).get("State", "")
    except orthanc.OrthancException:
        return ""


def send(obj, dest, stuck):
    """Sends one stored instance to one destination as an Orthanc job, and waits for the job
    (polling: short REST calls, sleeps in between). Retryable on any failure; Gone when the
    object was deleted meanwhile. `stuck` (destination -> job id) holds the jobs given up
    after ForwardTimeoutSeconds: while one still runs (a hung PACS holds it until Orthanc's
    own DicomScuTimeout / HttpTimeout), no other job is submitted to that destination, so a
    hung PACS never fills Orthanc's job engine."""
    try:
        rest_json("/instances/%s" % obj)
    except orthanc.OrthancException:
        raise Gone()
    if dest in stuck:
        if job_state(stuck[dest]) in ("Running", "Pending", "Retry", "Paused"):
            raise Retryable("%s is not answering: job %s, given up after %.0f s, still runs"
                            % (dest, stuck[dest], CFG["ForwardTimeoutSeconds"]))
        del stuck[dest]
    kind, name = destination(dest)
    body = json.dumps({"Resources": [obj], "Synchronous": False})
    quoted = urllib.parse.quote(name, safe="")
    try:
        if kind == "modality":
            job = json.loads(orthanc.RestApiPost("/modalities/%s/store" % quoted, body))
        else:
            job = json.loads(orthanc.RestApiPostAfterPlugins("/dicom-web/servers/%s/stow" % quoted, body))
    except orthanc.OrthancException as e:
        raise Retryable("%s %s refused the job: %s" % (kind, name, e))
    job_id = job.get("ID") if isinstance(job, dict) else None
    if not job_id:
        return   # answered synchronously: done
    end = time.time() + CFG["ForwardTimeoutSeconds"]
    while True:
        try:
            state = rest_json("/jobs/%s" % job_id)
        except orthanc.OrthancException as e:
            raise Retryable("job %s of %s %s vanished: %s" % (job_id, kind, name, e))
        if state.get("State") == "Success":
            return
        if state.get("State") == "Failure":
            detail = state.get("ErrorDetails") or ""
            raise Retryable("%s %s: %s%s" % ("C-STORE to" if kind == "modality" else "STOW-RS to", name,
                                             state.get("ErrorDescription", "job failed"),
                                             " (%s)" % detail if detail else ""))
        if time.time() > end or FORWARDER.stopping:
            try:
                orthanc.RestApiPost("/jobs/%s/cancel" % job_id, "")
            except orthanc.OrthancException:
                pass
            stuck[dest] = job_id
            raise Retryable("%s %s: %s" % (kind, name, "Orthanc is stopping" if FORWARDER.stopping else
                                           "no answer within %.0f s" % CFG["ForwardTimeoutSeconds"]))
        time.sleep(0.25)


def record_forward(source, dest, kind, status):
    with FORWARD_META_LOCK:
        try:
            current = json.loads(orthanc.RestApiGet("/instances/%s/metadata/%s" % (source, FORWARD)))
        except (orthanc.OrthancException, ValueError):
            current = {}
        if not isinstance(current, dict):
            current = {}
        current.setdefault(dest, {})[kind] = status
        try:
            put_metadata(source, FORWARD, json.dumps(current, sort_keys=True))
        except orthanc.OrthancException as e:
            orthanc.LogWarning("chexd: cannot record forwarding of %s to %s (%s): %s" % (source, dest, status, e))


class Forwarder:
    """One thread sending the stored results, due rows first; each destination has its own
    Gate (a destination that is down pauses, the others go on)."""

    def __init__(self):
        self.cond = threading.Condition()
        self.stopping = False
        self.gates = {}
        self.stuck = {}   # destination -> job given up on (only the forwarding thread uses it)
        self.counters = {"ok": 0, "failed": 0, "retried": 0}

    def gate(self, dest):
        with self.cond:
            return self.gates.setdefault(dest, Gate(chexd=False))

    def wake(self):
        with self.cond:
            self.cond.notify_all()

    def stop(self):
        with self.cond:
            self.stopping = True
            self.cond.notify_all()

    def count(self, key):
        with self.cond:
            self.counters[key] += 1

    def run(self):
        while True:
            with self.cond:
                if self.stopping:
                    return
            rows = STORE.fwd_due(time.time(), 16)
            if not rows:
                with self.cond:
                    if self.stopping:
                        return
                    nxt = STORE.fwd_next_due()
                    self.cond.wait(1.0 if nxt is None else min(1.0, max(0.02, nxt - time.time())))
                continue
            for row in rows:
                if self.stopping:
                    return
                try:
                    self.forward(row)
                except Exception as e:  # the thread must survive anything one row does
                    orthanc.LogError("chexd: forwarding %s to %s: %r" % (row[1], row[2], e))
                    try:
                        STORE.fwd_fail(row[0], time.time(), "failed: %r" % e)
                    except Exception as e2:
                        orthanc.LogError("chexd: cannot record the forwarding failure: %r" % e2)

    def forward(self, row):
        seq, obj, dest, source, kind, first_seen, tries, state = row
        gate = self.gate(dest)
        now = time.time()
        pause, error = gate.wait(now)
        if pause > 0:
            self.retry_later(row, now, now + pause, error, False)
            return
        try:
            send(obj, dest, self.stuck)
        except Gone:
            STORE.fwd_drop(seq)
            orthanc.LogInfo("chexd: %s (%s of %s) was deleted before it was forwarded to %s" % (obj, kind, source, dest))
            return
        except Retryable as e:
            now = time.time()
            until = gate.fail(now, str(e), None)
            orthanc.LogWarning("chexd: forwarding %s of %s to %s, attempt %d: %s; next attempt in %.1f s"
                               % (kind, source, dest, tries + 1, e, until - now))
            self.retry_later(row, now, until, str(e), True)
            return
        gate.ok(time.time())
        STORE.fwd_drop(seq)
        self.count("ok")
        record_forward(source, dest, kind, "ok")

    def retry_later(self, row, now, until, error, tried):
        seq, obj, dest, source, kind, first_seen, tries, state = row
        tries, due = next_attempt(first_seen, tries, now, until, tried)
        if due is None:
            reason = failed_after(tries, first_seen, now, error)
            orthanc.LogError("chexd: forwarding %s of %s to %s %s" % (kind, source, dest, reason))
            STORE.fwd_fail(seq, now, reason)
            self.count("failed")
            record_forward(source, dest, kind, reason)
            return
        STORE.fwd_reschedule(seq, due, tries, error)
        if tried:
            self.count("retried")
        if tried or state != "retrying":
            record_forward(source, dest, kind, retrying(tries, dest, error, due, now))

    def snapshot(self, now):
        with self.cond:
            gates = dict(self.gates)
            counters = dict(self.counters)
        new, retrying_, failed, recent = STORE.fwd_counts()
        return {"destinations": CFG["ForwardTo"], "pending": new, "retrying": retrying_, "failed": failed,
                "counters": counters, "gates": {d: g.snapshot(now) for d, g in gates.items()},
                "recent_failures": [{"source": s, "object": o, "kind": k, "dest": d, "at": iso(at), "reason": r}
                                    for s, o, k, d, at, r in recent]}


FORWARDER = Forwarder()


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
        # Forwarding needs Orthanc only: it runs even when sending to chexd is refused.
        STORE.fwd_all_due_now(time.time())
        t = threading.Thread(target=FORWARDER.run, name="chexd-forward", daemon=True)
        t.start()
        THREADS.append(t)
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
        results = [k for k in ("StoreSR", "StoreSC") if CFG[k]]
        fnew, fretrying, ffailed, _ = STORE.fwd_counts()
        orthanc.LogWarning("chexd: results stored as DICOM: %s; forwarded to: %s; %d pending, %d retrying, %d failed"
                           % (", ".join(k[-2:] for k in results) or "none",
                              ", ".join(CFG["ForwardTo"]) or "nowhere", fnew, fretrying, ffailed))
    elif change_type == orthanc.ChangeType.ORTHANC_STOPPED:
        if WORK:
            WORK.stop()
        FORWARDER.stop()
        # Bounded: a worker may be waiting on chexd; its thread is a daemon thread, and
        # the instance it holds stays in the store for the next start.
        for t in THREADS:
            t.join(timeout=min(CFG["TimeoutSeconds"] + 1, 10))


def answer_json(output, obj):
    output.AnswerBuffer(json.dumps(obj, indent=2), "application/json")


def unavailable(output):
    body = "chexd plugin: %s\n" % STORE_ERROR
    output.SendHttpStatus(503, body, len(body.encode()))


def post_route_usable(output, request):
    """A POST route's common checks: the method (405) and the plugin's store (503)."""
    if request["method"] != "POST":
        output.SendMethodNotAllowed("POST")
        return False
    if not WORK:
        unavailable(output)
        return False
    return True


def classify_instance_route(output, uri, **request):
    if not post_route_usable(output, request):
        return
    instance_id = request["groups"][0]
    try:
        series = rest_json("/instances/%s/series" % instance_id)
    except orthanc.OrthancException:
        output.SendHttpStatusCode(404)
        return
    tags = series.get("MainDicomTags", {})
    modality = tags.get("Modality", "")
    try:
        sop_class = orthanc.RestApiGet("/instances/%s/metadata/SopClassUid" % instance_id).decode().strip()
    except orthanc.OrthancException:
        sop_class = ""
    why = ""
    if modality.upper() not in CFG["Modalities"]:
        why = "modality %s is not classified (Chexd.Modalities)" % (modality or "missing")
    elif tags.get("Manufacturer", "").strip() == CHEXD_MANUFACTURER or sop_class.startswith(SR_CLASS_PREFIX):
        why = "chexd's own results are not classified"
    if why:
        body = why + "\n"
        output.SendHttpStatus(400, body, len(body.encode()))  # orthanc-python 4.0 wants a str here
        return
    WORK.offer(instance_id)
    record_status(instance_id, "queued")
    answer_json(output, {"queued": [instance_id]})


def classify_study_route(output, uri, **request):
    if not post_route_usable(output, request):
        return
    study_id = request["groups"][0]
    try:
        series_list = rest_json("/studies/%s/series" % study_id)
    except orthanc.OrthancException:
        output.SendHttpStatusCode(404)
        return
    queued, skipped = [], []
    for series in series_list:
        tags = series.get("MainDicomTags", {})
        modality = tags.get("Modality", "").upper()
        for instance_id in series.get("Instances", []):
            if modality not in CFG["Modalities"] or tags.get("Manufacturer", "").strip() == CHEXD_MANUFACTURER:
                skipped.append(instance_id)
            else:
                WORK.offer(instance_id)
                record_status(instance_id, "queued")
                queued.append(instance_id)
    answer_json(output, {"queued": queued, "skipped_modality": skipped})


def requeue_failed_route(output, uri, **request):
    if not post_route_usable(output, request):
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
    forwards = STORE.fwd_requeue_failed(time.time())
    if forwards:
        FORWARDER.wake()
    answer_json(output, {"queued": queued, "forwards_queued": forwards})


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
        chexd=GATE.snapshot(now), forward=FORWARDER.snapshot(now), store=STORE.path, config=shown))


orthanc.RegisterOnChangeCallback(on_change)
orthanc.RegisterRestCallback("/chexd/instances/([^/]+)/classify", classify_instance_route)
orthanc.RegisterRestCallback("/chexd/studies/([^/]+)/classify", classify_study_route)
orthanc.RegisterRestCallback("/chexd/failed/requeue", requeue_failed_route)
orthanc.RegisterRestCallback("/chexd/status", status_route)
