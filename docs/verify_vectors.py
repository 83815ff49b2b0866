#!/usr/bin/env python3
"""An independent implementation of docs/HASHING.md (Python standard library only).

It recomputes every test vector in docs/hash-vectors.json from the specification alone and
compares with the values printed in docs/HASHING.md. CI runs it, so the document is proven
sufficient to re-implement the hash in another language.
"""
import hashlib
import json
import math
import re
import struct
import sys
import uuid
from datetime import datetime, timezone
from pathlib import Path

DOMAIN = b"AVL-LEDGER-RECORD-V1\x00"


def es_number(x):
    """ECMAScript Number.prototype.toString for a finite double (RFC 8785 section 3.2.2.3)."""
    if isinstance(x, int) and not isinstance(x, bool):
        if abs(x) > 2**53 - 1:
            raise ValueError(f"integer {x} cannot be hashed faithfully")
        return str(x)
    if not math.isfinite(x):
        raise ValueError("non-finite number")
    if x == 0:
        return "0"
    sign = "-" if x < 0 else ""
    r = repr(abs(x))  # shortest round-trip digits
    m = re.fullmatch(r"(\d+)(?:\.(\d+))?(?:e([+-]\d+))?", r)
    intpart, frac, exp = m.group(1), m.group(2) or "", int(m.group(3) or 0)
    digits = (intpart + frac).lstrip("0")
    # value = 0.digits * 10^n
    n = len(intpart.lstrip("0")) + exp if intpart.strip("0") else exp - (len(frac) - len(frac.lstrip("0")))
    digits = digits.rstrip("0") or "0"
    k = len(digits)
    if k <= n <= 21:
        out = digits + "0" * (n - k)
    elif 0 < n <= 21:
        out = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        out = "0." + "0" * (-n) + digits
    else:
        e = n - 1
        out = digits[0] + ("." + digits[1:] if k > 1 else "") + "e" + ("+" if e >= 0 else "-") + str(abs(e))
    return sign + out


def es_string(s):
    out = ['"']
    for ch in s:
        c = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch in "\b\t\n\f\r":
            out.append({"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}[ch])
        elif c < 0x20:
            out.append("\\u%04x" % c)
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def jcs(v):
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, (int, float)):
        return es_number(v)
    if isinstance(v, str):
        return es_string(v)
    if isinstance(v, list):
        return "[" + ",".join(jcs(x) for x in v) + "]"
    if isinstance(v, dict):
        keys = sorted(v, key=lambda k: k.encode("utf-16-be"))  # UTF-16 code-unit order
        return "{" + ",".join(es_string(k) + ":" + jcs(v[k]) for k in keys) + "}"
    raise TypeError(type(v))


def micros(ts):
    dt = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    delta = dt - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def field(b):
    return struct.pack(">I", len(b)) + b


def preimage(r):
    prev = bytes.fromhex(r["prev_hash"]) if r["prev_hash"] else b""
    return DOMAIN + b"".join(
        field(f)
        for f in [
            uuid.UUID(r["rid"]).bytes,
            uuid.UUID(r["anchor_id"]).bytes,
            r["slot"].encode(),
            r["kind"].encode(),
            struct.pack(">q", micros(r["ts"])),
            prev,
            jcs(r["payload"]).encode(),
            r["producer"].encode(),
            r["version"].encode(),
        ]
    )


def main():
    docs = Path(__file__).resolve().parent
    vectors = json.loads((docs / "hash-vectors.json").read_text(encoding="utf-8"))
    doc = (docs / "HASHING.md").read_text(encoding="utf-8")
    hashes, failures, passed = [], 0, 0
    for i, v in enumerate(vectors):
        r = dict(v["record"])
        if r["prev_hash"] and r["prev_hash"].startswith("@"):
            r["prev_hash"] = hashes[int(r["prev_hash"][1:])]
        pre = preimage(r)
        h = hashlib.sha256(pre).hexdigest()
        hashes.append(h)
        ok = f"hash: {h}" in doc and pre.hex() in doc and f"jcs: {jcs(r['payload'])}" in doc
        failures += not ok
        passed += ok
        print(f"{'ok  ' if ok else 'FAIL'} vector {i} ({v['name']}): {h}")
    # A few number-formatting cases beyond the vectors (RFC 8785 appendix B style).
    for x, want in [(1e21, "1e+21"), (1e-7, "1e-7"), (123e-20, "1.23e-18"), (0.000001, "0.000001"),
                    (1e20, "100000000000000000000"), (-0.0, "0"), (5e-324, "5e-324"),
                    (1.7976931348623157e308, "1.7976931348623157e+308"), (0.1 + 0.2, "0.30000000000000004")]:
        got = es_number(x)
        if got != want:
            failures += 1
            print(f"FAIL number {x!r}: {got} != {want}")
        else:
            passed += 1
    print(f"{passed} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
