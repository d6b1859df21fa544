"""Answers questions about Tornado's signed values and XSRF tokens with real Tornado.

Reads one JSON request from stdin, writes one JSON answer to stdout. Used by
crates/cloakroom-core/tests/tornado_kat.rs as the known-answer oracle.
"""
import base64
import binascii
import json
import sys

import tornado
from tornado.util import _websocket_mask
from tornado.web import RequestHandler, create_signed_value, decode_signed_value


def secret_of(s):
    if isinstance(s, dict):
        return {int(k): v for k, v in s.items()}
    return s


def main():
    req = json.load(sys.stdin)
    out = {"tornado": tornado.version, "create": [], "decode": [], "xsrf_create": [], "xsrf_decode": []}
    for c in req.get("create", []):
        v = create_signed_value(
            secret_of(c["secret"]), c["name"], c["value"], version=c["version"],
            clock=lambda: c["now"], key_version=c.get("key_version"),
        )
        out["create"].append(v.decode())
    for d in req.get("decode", []):
        try:
            v = decode_signed_value(
                secret_of(d["secret"]), d["name"], d["value"], max_age_days=d["max_age_days"],
                clock=lambda: d["now"],
            )
        except Exception as e:  # Tornado raises on some malformed input; treat as refused
            v = None
        out["decode"].append(None if v is None else base64.b64encode(v).decode())
    for x in req.get("xsrf_create", []):
        mask = binascii.a2b_hex(x["mask"])
        token = binascii.a2b_hex(x["secret"])
        v = b"|".join([b"2", binascii.b2a_hex(mask), binascii.b2a_hex(_websocket_mask(mask, token)),
                       str(x["timestamp"]).encode()])
        out["xsrf_create"].append(v.decode())
    for t in req.get("xsrf_decode", []):
        try:
            _, token, _ = RequestHandler._decode_xsrf_token(None, t)
        except Exception:
            token = None
        out["xsrf_decode"].append(None if token is None else binascii.b2a_hex(token).decode())
    json.dump(out, sys.stdout)


main()
