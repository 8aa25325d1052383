"""tests/integration/oipclient.py - a small Open Inference Protocol (KServe v2
REST) client written from the protocol text (kserve/open-inference-protocol
inference_rest.md) and Triton's binary data extension
(extension_binary_data.md), with urllib only. No chexd code is shared."""
import base64
import json
import struct
import urllib.error
import urllib.request


class Answer:
    """status, headers (lower-case names), raw body, JSON header, decoded outputs."""

    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body
        hl = headers.get("inference-header-content-length")
        head = body if hl is None else body[: int(hl)]
        self.json = json.loads(head) if head else None
        self.outputs = {}
        if status != 200 or not isinstance(self.json, dict) or "model_name" not in self.json:
            return
        off = len(head)
        for o in self.json.get("outputs", []):
            size = (o.get("parameters") or {}).get("binary_data_size")
            if size is None:
                self.outputs[o["name"]] = o["data"]
                continue
            raw = body[off: off + size]
            assert len(raw) == size, (o, len(raw))
            off += size
            self.outputs[o["name"]] = decode(o["datatype"], raw)
        assert off == len(body), ("bytes after the outputs", off, len(body))


def decode(datatype, raw):
    if datatype == "FP32":
        return list(struct.unpack("<%df" % (len(raw) // 4), raw))
    if datatype == "BYTES":
        out, i = [], 0
        while i < len(raw):
            (n,) = struct.unpack_from("<I", raw, i)
            out.append(raw[i + 4: i + 4 + n].decode())
            i += 4 + n
        return out
    raise ValueError(datatype)


def call(base, method, path, body=None, headers=None, timeout=120):
    req = urllib.request.Request(base + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return Answer(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
    except urllib.error.HTTPError as e:
        return Answer(e.code, {k.lower(): v for k, v in e.headers.items()}, e.read())


def infer(base, model, doc, tail=b"", version=None, headers=None):
    """POST doc (a dict) as JSON, plus a binary tail when given."""
    path = "/v2/models/%s%s/infer" % (model, "/versions/" + version if version else "")
    head = json.dumps(doc).encode()
    h = {"Content-Type": "application/octet-stream" if tail else "application/json"}
    if tail:
        h["Inference-Header-Content-Length"] = str(len(head))
    h.update(headers or {})
    return call(base, "POST", path, head + tail, h)


def images_json(images, **kw):
    """image BYTES [N] as base64 strings (parameters.content_type base64)."""
    doc = {"inputs": [{"name": "image", "shape": [len(images)], "datatype": "BYTES",
                       "parameters": {"content_type": "base64"},
                       "data": [base64.b64encode(b).decode() for b in images]}]}
    doc.update(kw)
    return doc, b""


def images_binary(images, **kw):
    """image BYTES [N] in the binary tail: 4-byte little-endian length + bytes each."""
    tail = b"".join(struct.pack("<I", len(b)) + b for b in images)
    doc = {"inputs": [{"name": "image", "shape": [len(images)], "datatype": "BYTES",
                       "parameters": {"binary_data_size": len(tail)}}]}
    doc.update(kw)
    return doc, tail


def tensor_json(values, shape, **kw):
    doc = {"inputs": [{"name": "input", "shape": shape, "datatype": "FP32", "data": values}]}
    doc.update(kw)
    return doc, b""


def tensor_binary(values, shape, **kw):
    tail = struct.pack("<%df" % len(values), *values)
    doc = {"inputs": [{"name": "input", "shape": shape, "datatype": "FP32",
                       "parameters": {"binary_data_size": len(tail)}}]}
    doc.update(kw)
    return doc, tail
