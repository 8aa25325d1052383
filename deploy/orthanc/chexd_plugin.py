# chexd_plugin.py - Orthanc Python plugin: classify every new chest radiograph with chexd.
#
# For Orthanc 1.10 with orthanc-python 4.0 (Debian 12). Loaded by orthanc.json:
#   "Plugins": ["/usr/share/orthanc/plugins/libOrthancPython.so"],
#   "PythonScript": "/etc/orthanc/chexd_plugin.py"
#
# Flow: the on-change callback only puts the new instance's id on a bounded queue and
# returns (no REST call there: the Orthanc Book warns it can deadlock, and a PACS must
# never wait for the classifier). Worker threads take ids from the queue, keep
# instances whose series Modality is CR/DX/DR, GET /instances/{id}/file (transcoded by
# Orthanc to Explicit VR Little Endian when chexd cannot read the stored syntax), POST
# it to chexd, and store the JSON answer on the instance as user metadata "chexd" and
# attachment "chexd" (both declared in the configuration, index >= 1024). Metadata
# "chexd-status" says "ok", "retrying ..." or "failed: ..." so that no result goes
# missing silently: chexd down, a timeout or a 5xx is retried with exponential
# backoff; a 4xx (the file itself is refused) or the last failed attempt is recorded.
#
# REST routes added to Orthanc:
#   POST /chexd/instances/{id}/classify   (re)classify one instance
#   POST /chexd/studies/{id}/classify     (re)classify every CR/DX/DR instance of a study
#   GET  /chexd/status                    queue length, counters, configuration in use
#
# Configuration: the "Chexd" section of the Orthanc configuration; CHEXD_URL,
# CHEXD_TOKEN and CHEXD_TOKEN_FILE in Orthanc's environment override it (handy with
# docker-compose). Keys (defaults):
#   "Url": "http://127.0.0.1:8080/v1/predict"
#   "Token": "" / "TokenFile": ""    bearer token for chexd's --api-token-file
#   "Modalities": ["CR", "DX", "DR"]
#   "QueueSize": 1000                 pending instances; beyond it "failed: queue full"
#   "Workers": 1                      concurrent requests to chexd
#   "TimeoutSeconds": 60              per request to chexd
#   "MaxAttempts": 6                  attempts per instance (1 + 5 retries)
#   "BackoffSeconds": 2               first retry delay, doubled each time ...
#   "MaxBackoffSeconds": 60           ... up to this
#   "AcceptedTransferSyntaxes": every syntax chexd reads itself (no transcoding round
#                                     trip): Explicit/Implicit VR LE, Deflated, JPEG Baseline,
#                                     JPEG Lossless, JPEG-LS, JPEG 2000, RLE
#   "TranscodeTo": "1.2.840.10008.1.2.1"   used for every other transfer syntax ("" = send as is)

import heapq
import json
import os
import queue
import threading
import time
import urllib.error
import urllib.request

import orthanc

METADATA = "chexd"
STATUS = "chexd-status"
ATTACHMENT = "chexd"

DEFAULTS = {
    "Url": "http://127.0.0.1:8080/v1/predict",
    "Token": "",
    "TokenFile": "",
    "Modalities": ["CR", "DX", "DR"],
    "QueueSize": 1000,
    "Workers": 1,
    "TimeoutSeconds": 60,
    "MaxAttempts": 6,
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
        "1.2.840.10008.1.2.5",    # RLE Lossless
        # not .4.51 (chexd reads 8-bit JPEG Extended only) nor HTJ2K: transcoded
    ],
    "TranscodeTo": "1.2.840.10008.1.2.1",
}


def load_config():
    full = json.loads(orthanc.GetConfiguration())
    # "${ORTHANC_ADMIN_PASSWORD}" of an unset variable becomes "": say so loudly.
    empty = [u for u, pw in full.get("RegisteredUsers", {}).items() if not pw]
    if empty and full.get("AuthenticationEnabled", False):
        orthanc.LogError("chexd: RegisteredUsers %s have an EMPTY password (unset environment variable?)"
                         % ", ".join(sorted(empty)))
    cfg = dict(DEFAULTS)
    section = full.get("Chexd", {})
    unknown = sorted(set(section) - set(DEFAULTS))
    if unknown:
        orthanc.LogWarning("chexd: unknown keys in the Chexd configuration section: %s" % ", ".join(unknown))
    cfg.update({k: v for k, v in section.items() if k in DEFAULTS})
    if os.environ.get("CHEXD_URL"):
        cfg["Url"] = os.environ["CHEXD_URL"]
    if os.environ.get("CHEXD_TOKEN"):
        cfg["Token"] = os.environ["CHEXD_TOKEN"]
    if os.environ.get("CHEXD_TOKEN_FILE"):
        cfg["TokenFile"] = os.environ["CHEXD_TOKEN_FILE"]
    if cfg["TokenFile"] and not cfg["Token"]:
        with open(cfg["TokenFile"], encoding="utf-8") as f:
            cfg["Token"] = f.read().strip()
    cfg["Modalities"] = [m.upper() for m in cfg["Modalities"]]
    for key in ("QueueSize", "Workers", "MaxAttempts"):
        cfg[key] = max(1, int(cfg[key]))
    for key in ("TimeoutSeconds", "BackoffSeconds", "MaxBackoffSeconds"):
        cfg[key] = max(0.0, float(cfg[key]))
    return cfg


CFG = load_config()


class Retryable(Exception):
    """chexd unreachable, timed out or answered 5xx: worth trying again later."""


class Permanent(Exception):
    """The instance itself cannot be classified (4xx, not an image, gone)."""


class Skip(Exception):
    """Not a modality we classify."""


class Work:
    """The bounded queue fed by the change callback, plus the retry schedule.

    The change callback only calls offer(): put_nowait on a queue.Queue, never a
    REST call. Instances that do not fit are remembered (ids only) and marked
    failed by a worker, so the overflow is visible on the instances themselves."""

    def __init__(self, size):
        self.fresh = queue.Queue(maxsize=size)
        self.lock = threading.Lock()
        self.delayed = []            # heap of (due, seq, instance_id, attempt)
        self.seq = 0
        self.overflow = []
        self.stopping = False
        self.counters = {"queued": 0, "ok": 0, "failed": 0, "retried": 0, "skipped": 0, "overflow": 0}

    def count(self, key, n=1):
        with self.lock:
            self.counters[key] += n

    def offer(self, instance_id):
        try:
            self.fresh.put_nowait((instance_id, 1))
            self.count("queued")
            return True
        except queue.Full:
            with self.lock:
                self.overflow.append(instance_id)
                self.counters["overflow"] += 1
            return False

    def retry_later(self, instance_id, attempt, delay):
        with self.lock:
            self.seq += 1
            heapq.heappush(self.delayed, (time.monotonic() + delay, self.seq, instance_id, attempt))
            self.counters["retried"] += 1

    def take(self):
        """Next (instance_id, attempt) to process, ("overflow", id) entries, or None to stop."""
        while True:
            with self.lock:
                if self.stopping:
                    return None
                if self.overflow:
                    return ("overflow", self.overflow.pop(0))
                now = time.monotonic()
                if self.delayed and self.delayed[0][0] <= now:
                    _, _, iid, attempt = heapq.heappop(self.delayed)
                    return (iid, attempt)
                wait = self.delayed[0][0] - now if self.delayed else 0.5
            try:
                return self.fresh.get(timeout=min(wait, 0.5))
            except queue.Empty:
                pass

    def stop(self):
        with self.lock:
            self.stopping = True

    def snapshot(self):
        with self.lock:
            return {
                "queue": self.fresh.qsize(),
                "queue_size": self.fresh.maxsize,
                "retry_pending": len(self.delayed),
                "counters": dict(self.counters),
            }


WORK = Work(CFG["QueueSize"])


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


def post_to_chexd(dicom):
    headers = {"Content-Type": "application/dicom", "Accept": "application/json"}
    if CFG["Token"]:
        headers["Authorization"] = "Bearer " + CFG["Token"]
    req = urllib.request.Request(CFG["Url"], data=dicom, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=CFG["TimeoutSeconds"]) as resp:
            body = resp.read()
    except urllib.error.HTTPError as e:
        detail = e.read()[:300].decode("utf-8", "replace").replace("\n", " ")
        if e.code >= 500 or e.code in (408, 429):
            raise Retryable("chexd answered %d: %s" % (e.code, detail))
        raise Permanent("chexd answered %d: %s" % (e.code, detail))
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise Retryable("chexd unreachable at %s: %s" % (CFG["Url"], reason))
    try:
        answer = json.loads(body)
    except ValueError:
        raise Retryable("chexd answered 200 with a body that is not JSON")
    if not isinstance(answer, dict) or not isinstance(answer.get("predictions"), list):
        raise Permanent("chexd answered without predictions")
    return answer


def classify(instance_id, attempt):
    try:
        series = rest_json("/instances/%s/series" % instance_id)
    except orthanc.OrthancException:
        raise Skip("instance %s is gone" % instance_id)
    modality = series.get("MainDicomTags", {}).get("Modality", "").upper()
    if modality not in CFG["Modalities"]:
        raise Skip("modality %s" % (modality or "missing"))
    answer = post_to_chexd(instance_file(instance_id))
    compact = json.dumps(answer, separators=(",", ":"), sort_keys=True)
    put_metadata(instance_id, METADATA, compact)
    orthanc.RestApiPut("/instances/%s/attachments/%s" % (instance_id, ATTACHMENT), compact)
    record_status(instance_id, "ok")


def process(instance_id, attempt):
    try:
        classify(instance_id, attempt)
        WORK.count("ok")
    except Skip as e:
        WORK.count("skipped")
        orthanc.LogInfo("chexd: %s skipped: %s" % (instance_id, e))
    except Permanent as e:
        WORK.count("failed")
        orthanc.LogError("chexd: %s failed: %s" % (instance_id, e))
        record_status(instance_id, "failed: %s" % e)
    except Retryable as e:
        if attempt >= CFG["MaxAttempts"]:
            WORK.count("failed")
            orthanc.LogError("chexd: %s failed after %d attempts: %s" % (instance_id, attempt, e))
            record_status(instance_id, "failed after %d attempts: %s" % (attempt, e))
        else:
            delay = min(CFG["MaxBackoffSeconds"], CFG["BackoffSeconds"] * (2 ** (attempt - 1)))
            orthanc.LogWarning("chexd: %s attempt %d/%d: %s; retry in %.1f s"
                               % (instance_id, attempt, CFG["MaxAttempts"], e, delay))
            record_status(instance_id, "retrying (attempt %d/%d failed: %s)" % (attempt, CFG["MaxAttempts"], e))
            WORK.retry_later(instance_id, attempt + 1, delay)
    except orthanc.OrthancException as e:
        # Orthanc refused a REST call (instance deleted, storage full, ...).
        WORK.count("failed")
        orthanc.LogError("chexd: %s failed: Orthanc: %s" % (instance_id, e))
        record_status(instance_id, "failed: Orthanc: %s" % e)
    except Exception as e:  # a worker must survive anything one instance does
        WORK.count("failed")
        orthanc.LogError("chexd: %s failed: %r" % (instance_id, e))
        record_status(instance_id, "failed: %r" % e)


def worker():
    while True:
        item = WORK.take()
        if item is None:
            return
        if item[0] == "overflow":
            record_status(item[1], "failed: queue full (%d pending); POST /chexd/instances/%s/classify to retry"
                          % (CFG["QueueSize"], item[1]))
            WORK.count("failed")
            continue
        process(*item)


THREADS = []


def on_change(change_type, level, resource_id):
    # Runs on Orthanc's change thread: enqueue and return, nothing else.
    if change_type == orthanc.ChangeType.NEW_INSTANCE:
        WORK.offer(resource_id)
    elif change_type == orthanc.ChangeType.ORTHANC_STARTED:
        for i in range(CFG["Workers"]):
            t = threading.Thread(target=worker, name="chexd-worker-%d" % i, daemon=True)
            t.start()
            THREADS.append(t)
        orthanc.LogWarning("chexd: %d worker(s) sending %s to %s"
                           % (CFG["Workers"], "/".join(CFG["Modalities"]), CFG["Url"]))
    elif change_type == orthanc.ChangeType.ORTHANC_STOPPED:
        WORK.stop()
        # Bounded: a worker may be waiting on chexd; its thread is a daemon thread.
        for t in THREADS:
            t.join(timeout=min(CFG["TimeoutSeconds"] + 1, 10))


def answer_json(output, obj):
    output.AnswerBuffer(json.dumps(obj, indent=2), "application/json")


def classify_instance_route(output, uri, **request):
    if request["method"] != "POST":
        output.SendMethodNotAllowed("POST")
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
    queued = WORK.offer(instance_id)
    if queued:
        record_status(instance_id, "queued")
    answer_json(output, {"queued": [instance_id] if queued else [], "overflow": [] if queued else [instance_id]})


def classify_study_route(output, uri, **request):
    if request["method"] != "POST":
        output.SendMethodNotAllowed("POST")
        return
    study_id = request["groups"][0]
    try:
        series_list = rest_json("/studies/%s/series" % study_id)
    except orthanc.OrthancException:
        output.SendHttpStatusCode(404)
        return
    queued, overflow, skipped = [], [], []
    for series in series_list:
        modality = series.get("MainDicomTags", {}).get("Modality", "").upper()
        for instance_id in series.get("Instances", []):
            if modality not in CFG["Modalities"]:
                skipped.append(instance_id)
            elif WORK.offer(instance_id):
                record_status(instance_id, "queued")
                queued.append(instance_id)
            else:
                overflow.append(instance_id)
    answer_json(output, {"queued": queued, "overflow": overflow, "skipped_modality": skipped})


def status_route(output, uri, **request):
    if request["method"] != "GET":
        output.SendMethodNotAllowed("GET")
        return
    shown = {k: v for k, v in CFG.items() if k not in ("Token",)}
    shown["Token"] = "(set)" if CFG["Token"] else ""
    answer_json(output, dict(WORK.snapshot(), config=shown))


orthanc.RegisterOnChangeCallback(on_change)
orthanc.RegisterRestCallback("/chexd/instances/([^/]+)/classify", classify_instance_route)
orthanc.RegisterRestCallback("/chexd/studies/([^/]+)/classify", classify_study_route)
orthanc.RegisterRestCallback("/chexd/status", status_route)
