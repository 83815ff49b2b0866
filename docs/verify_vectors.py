#!/usr/bin/env python3
"""An independent implementation of docs/HASHING.md (Python standard library only).

It recomputes every test vector from the specification alone, from the inputs printed in
docs/HASHING.md (and the same inputs in docs/hash-vectors.json), and compares with the values
printed in docs/HASHING.md; then it checks docs/log-vectors.json:
the RFC 6962 reference tree (roots, inclusion and consistency proofs, generated and
verified), the AVL log over the record vectors, its C2SP signed checkpoint (Ed25519 verified
with RFC 8032's reference arithmetic) and the receipt, verified offline as a third party
would. CI runs it, so the document is proven sufficient to re-implement the hash, the log
and receipt verification in another language.
"""
import base64
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


# --- The log (docs/HASHING.md, "The log") -----------------------------------------------

def leaf_hash(data):
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left, right):
    return hashlib.sha256(b"\x01" + left + right).digest()


def split(n):
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(leaves):
    """RFC 6962 Merkle Tree Hash of a list of leaf hashes."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = split(len(leaves))
    return node_hash(mth(leaves[:k]), mth(leaves[k:]))


def path(m, leaves):
    if len(leaves) <= 1:
        return []
    k = split(len(leaves))
    if m < k:
        return path(m, leaves[:k]) + [mth(leaves[k:])]
    return path(m - k, leaves[k:]) + [mth(leaves[:k])]


def subproof(m, leaves, complete):
    n = len(leaves)
    if m == n:
        return [] if complete else [mth(leaves)]
    k = split(n)
    if m <= k:
        return subproof(m, leaves[:k], complete) + [mth(leaves[k:])]
    return subproof(m - k, leaves[k:], False) + [mth(leaves[:k])]


def verify_inclusion(index, size, leaf, proof, root):
    """RFC 9162 section 2.1.3.2."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(old, new, old_root, new_root, proof):
    """RFC 9162 section 2.1.4.2 (0 < old < new)."""
    if not 0 < old < new or not proof:
        return False
    if old & (old - 1) == 0:
        proof = [old_root] + proof
    fn, sn = old - 1, new - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root


# Ed25519 (RFC 8032 section 5.1), the RFC's reference arithmetic: verification only.
EP = 2**255 - 19
EL = 2**252 + 27742317777372353535851937790883648493
ED = -121665 * pow(121666, EP - 2, EP) % EP
EI = pow(2, (EP - 1) // 4, EP)


def _add(p, q):
    (x1, y1, z1, t1), (x2, y2, z2, t2) = p, q
    a, b = (y1 - x1) * (y2 - x2) % EP, (y1 + x1) * (y2 + x2) % EP
    c, d = t1 * 2 * ED * t2 % EP, z1 * 2 * z2 % EP
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % EP, g * h % EP, f * g % EP, e * h % EP)


def _mul(s, p):
    q = (0, 1, 1, 0)
    while s > 0:
        if s & 1:
            q = _add(q, p)
        p, s = _add(p, p), s >> 1
    return q


def _x(y, sign):
    if y >= EP:
        return None
    x2 = (y * y - 1) * pow(ED * y * y + 1, EP - 2, EP)
    if x2 % EP == 0:
        return None if sign else 0
    x = pow(x2, (EP + 3) // 8, EP)
    if (x * x - x2) % EP:
        x = x * EI % EP
    if (x * x - x2) % EP:
        return None
    return EP - x if (x & 1) != sign else x


def _point(b):
    y = int.from_bytes(b, "little")
    x = _x(y & ((1 << 255) - 1), y >> 255)
    return None if x is None else (x, y & ((1 << 255) - 1), 1, x * (y & ((1 << 255) - 1)) % EP)


def _bytes(p):
    zi = pow(p[2], EP - 2, EP)
    x, y = p[0] * zi % EP, p[1] * zi % EP
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


EG = _point((4 * pow(5, EP - 2, EP) % EP).to_bytes(32, "little"))


def ed25519_public(seed):
    h = hashlib.sha512(seed).digest()
    a = int.from_bytes(h[:32], "little")
    a = (a & ((1 << 254) - 8)) | (1 << 254)
    return _bytes(_mul(a, EG))


def ed25519_verify(public, msg, sig):
    A, R = _point(public), _point(sig[:32])
    s = int.from_bytes(sig[32:], "little")
    if A is None or R is None or s >= EL:
        return False
    h = int.from_bytes(hashlib.sha512(sig[:32] + public + msg).digest(), "little") % EL
    lhs, rhs = _mul(s, EG), _add(R, _mul(h, A))
    return (lhs[0] * rhs[2] - rhs[0] * lhs[2]) % EP == 0 and (lhs[1] * rhs[2] - rhs[1] * lhs[2]) % EP == 0


def key_id(name, public):
    return hashlib.sha256(name.encode() + b"\n\x01" + public).digest()[:4]


def parse_verifier(text):
    name, kid, key = text.strip().split("+", 2)
    raw = base64.b64decode(key)
    assert raw[0] == 1 and len(raw) == 33, "not an Ed25519 key"
    assert key_id(name, raw[1:]).hex() == kid, "key id mismatch"
    return name, raw[1:]


def open_note(note, name, public):
    """The signed text of a C2SP signed note, if a signature by (name, public) verifies."""
    text, sigs = note[: note.rindex("\n\n") + 1], note[note.rindex("\n\n") + 2:]
    for line in sigs.rstrip("\n").split("\n"):
        assert line.startswith("\u2014 "), f"bad signature line {line!r}"
        who, blob = line[2:].split(" ", 1)
        blob = base64.b64decode(blob)
        if who == name and blob[:4] == key_id(name, public):
            if ed25519_verify(public, text.encode(), blob[4:]):
                return text
    return None


def verify_receipt(receipt, verifier_key):
    """Offline receipt verification as docs/HASHING.md specifies it; returns a reason or None."""
    name, public = parse_verifier(verifier_key)
    text = open_note(receipt["checkpoint"], name, public)
    if text is None:
        return "checkpoint signature does not verify"
    origin, size, root_b64 = text.split("\n")[:3]
    if int(size) != receipt["tree_size"]:
        return "tree size differs from the checkpoint"
    record = dict(receipt["record"])
    if hashlib.sha256(preimage(record)).hexdigest() != record["hash"]:
        return "record hash does not match its fields"
    leaf = leaf_hash(bytes.fromhex(record["hash"]))
    proof = [bytes.fromhex(h) for h in receipt["inclusion_path"]]
    if not verify_inclusion(receipt["leaf_index"], int(size), leaf, proof, base64.b64decode(root_b64)):
        return "inclusion path does not lead to the checkpoint's root"
    return None


def check_log(docs, doc, record_hashes):
    """Checks docs/log-vectors.json; returns (passed, failed)."""
    vectors = json.loads((docs / "log-vectors.json").read_text(encoding="utf-8"))
    passed = failed = 0

    def check(ok, what):
        nonlocal passed, failed
        passed += bool(ok)
        failed += not ok
        print(f"{'ok  ' if ok else 'FAIL'} log: {what}")

    rfc = vectors["rfc6962"]
    leaves = [leaf_hash(bytes.fromhex(x)) for x in rfc["leaves_hex"]]
    check(mth([]).hex() == rfc["empty_root"], "empty tree root")
    check(all(mth(leaves[: i + 1]).hex() == r for i, r in enumerate(rfc["roots"])), "RFC 6962 roots, sizes 1..8")
    for c in rfc["inclusion"]:
        p = path(c["index"], leaves[: c["size"]])
        root = bytes.fromhex(rfc["roots"][c["size"] - 1])
        check([h.hex() for h in p] == c["path"] and verify_inclusion(c["index"], c["size"], leaves[c["index"]], p, root),
              f"RFC 6962 inclusion of {c['index']} in {c['size']}")
    for c in rfc["consistency"]:
        p = subproof(c["old"], leaves[: c["new"]], True)
        r1, r2 = (bytes.fromhex(rfc["roots"][n - 1]) for n in (c["old"], c["new"]))
        check([h.hex() for h in p] == c["proof"] and verify_consistency(c["old"], c["new"], r1, r2, p),
              f"RFC 6962 consistency {c['old']} -> {c['new']}")
    # Every size 1..64: every inclusion and consistency proof verifies; a flipped bit fails.
    big = [leaf_hash(bytes([i])) for i in range(64)]
    ok = True
    for n in range(1, 65):
        root = mth(big[:n])
        for m in range(n):
            p = path(m, big[:n])
            ok &= verify_inclusion(m, n, big[m], p, root)
            ok &= not verify_inclusion(m, n, bytes([big[m][0] ^ 1]) + big[m][1:], p, root)
        for m in range(1, n):
            p = subproof(m, big[:n], True)
            ok &= verify_consistency(m, n, mth(big[:m]), root, p)
            ok &= not verify_consistency(m, n, mth(big[:m]), bytes([root[0] ^ 1]) + root[1:], p)
    check(ok, "all proofs of sizes 1..64 verify, flipped bits fail")

    avl = vectors["avl_log"]
    leaves = [leaf_hash(bytes.fromhex(h)) for h in record_hashes]
    check([h.hex() for h in leaves] == avl["leaf_hashes"], "AVL leaf hashes of the record vectors")
    root = mth(leaves)
    check(root.hex() == avl["root"] and avl["root"] in doc, "AVL log root (printed in HASHING.md)")
    text = f"{avl['origin']}\n{len(leaves)}\n{base64.b64encode(root).decode()}\n"
    check(text == avl["checkpoint_text"], "checkpoint text")
    seed = base64.b64decode(avl["signer_key"].split("+")[-1])[1:]
    name, public = parse_verifier(avl["verifier_key"])
    check(ed25519_public(seed) == public and avl["verifier_key"] in doc, "signer and verifier keys match")
    check(open_note(avl["signed_note"], name, public) == text, "signed note verifies")
    forged = avl["signed_note"].replace(f"\n{len(leaves)}\n", f"\n{len(leaves) + 1}\n")
    check(open_note(forged, name, public) is None, "a note with another size does not verify")
    receipt = avl["receipt"]
    check(verify_receipt(receipt, avl["verifier_key"]) is None, "receipt verifies offline")
    altered = json.loads(json.dumps(receipt))
    altered["record"]["payload"]["amount"] = 101
    check(verify_receipt(altered, avl["verifier_key"]) is not None, "a receipt with an altered record fails")

    # Witness cosignature (cosignature/v1): the vector printed in HASHING.md, over this
    # checkpoint's text at the printed timestamp.
    block = doc.split("### Witness cosignatures", 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    values = dict(line.split(":", 1) for line in block.splitlines())
    w_seed = base64.b64decode(values["signer"].strip().split("+")[-1])
    w_name, w_kid, w_key = values["verifier"].strip().split("+", 2)
    w_raw = base64.b64decode(w_key)
    w_public = w_raw[1:]
    check(w_raw[0] == 4 and w_seed[0] == 4 and ed25519_public(w_seed[1:]) == w_public,
          "cosigner keys: type 0x04, signer and verifier match")
    check(hashlib.sha256(w_name.encode() + b"\n\x04" + w_public).digest()[:4].hex() == w_kid,
          "cosigner key id")
    who, b64 = values["line"].strip()[2:].split(" ", 1)
    blob = base64.b64decode(b64)
    timestamp = int.from_bytes(blob[4:12], "big")
    message = f"cosignature/v1\ntime {timestamp}\n".encode() + text.encode()
    check(who == w_name and len(blob) == 76 and blob[:4].hex() == w_kid and timestamp == 1700000000
          and ed25519_verify(w_public, message, blob[12:]), "cosignature verifies")
    check(not ed25519_verify(w_public, message.replace(b"\n7\n", b"\n8\n"), blob[12:]),
          "a cosignature of another size does not verify")
    return passed, failed


def doc_inputs(doc, i):
    """The inputs of record vector `i` as printed in HASHING.md (the block starting `rid:`)."""
    section = doc.split(f"### Vector {i}:", 1)[1]
    block = section.split("```text\n", 1)[1].split("```", 1)[0]
    r = {}
    for line in block.splitlines():
        key, _, value = line.partition(":")
        r[key] = value.strip()
    r["prev_hash"] = None if r["prev_hash"] == "none" else r["prev_hash"]
    r["payload"] = json.loads(r["payload"])
    return r


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
        # The document alone suffices: the inputs printed there give the same preimage.
        from_doc = preimage(doc_inputs(doc, i))
        ok = (f"hash: {h}" in doc and pre.hex() in doc and f"jcs: {jcs(r['payload'])}" in doc
              and from_doc == pre)
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
    p, f = check_log(docs, doc, hashes)
    passed += p
    failures += f
    print(f"{passed} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
