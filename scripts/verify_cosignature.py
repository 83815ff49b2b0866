#!/usr/bin/env python3
"""Verifies C2SP tlog-cosignature (cosignature/v1, Ed25519) lines on a signed checkpoint note,
written from the specifications (c2sp.org/tlog-cosignature, c2sp.org/signed-note) and
independent of the ledger's Rust code: an interoperability check of the ledger's witness
support and of its test witness.

    verify_cosignature.py NOTE_FILE WITNESS_VKEY_FILE [LOG_VKEY_FILE]

Exit 0 when the note carries a valid cosignature by the witness key (and, with LOG_VKEY_FILE,
a valid Ed25519 signature by the log's key, type 0x01) and no line under that key and key id
fails to verify; 1 otherwise (with the reason); 2 on unreadable input.
"""

import base64
import hashlib
import struct
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

DASH = "\u2014 "


def parse_vkey(text, want_type):
    # <name>+<hex key id>+<base64(type || key)>; the base64 part may itself contain '+'.
    name, key_id, b64 = text.strip().split("+", 2)
    raw = base64.b64decode(b64, validate=True)
    if len(raw) != 33 or raw[0] != want_type:
        raise ValueError(f"key {name}: type {raw[0]:#04x} length {len(raw)}, want type {want_type:#04x}")
    public = raw[1:]
    computed = hashlib.sha256(name.encode() + b"\n" + bytes([want_type]) + public).digest()[:4]
    if computed.hex() != key_id:
        raise ValueError(f"key {name}: key id {key_id} is not {computed.hex()}")
    return name, computed, Ed25519PublicKey.from_public_bytes(public)


def split_note(note):
    at = note.rfind("\n\n")
    if at < 0 or not note.endswith("\n"):
        raise ValueError("not a signed note")
    return note[: at + 1], note[at + 2 : -1].split("\n")


def signatures(lines, name, key_id):
    for line in lines:
        if not line.startswith(DASH):
            raise ValueError(f"bad signature line {line!r}")
        who, b64 = line[len(DASH) :].split(" ", 1)
        blob = base64.b64decode(b64, validate=True)
        if who == name and blob[:4] == key_id:
            yield blob


def main():
    if len(sys.argv) not in (3, 4):
        print(__doc__, file=sys.stderr)
        return 2
    try:
        note = open(sys.argv[1], encoding="utf-8").read()
        w_name, w_id, w_key = parse_vkey(open(sys.argv[2]).read(), 0x04)
        log = parse_vkey(open(sys.argv[3]).read(), 0x01) if len(sys.argv) == 4 else None
        text, lines = split_note(note)
    except (OSError, ValueError) as e:
        print(f"unreadable: {e}")
        return 2
    if log is not None:
        l_name, l_id, l_key = log
        ok = False
        for blob in signatures(lines, l_name, l_id):
            try:
                l_key.verify(blob[4:], text.encode())
                ok = True
            except InvalidSignature:
                print(f"invalid: a signature by the log key {l_name} does not verify")
                return 1
        if not ok:
            print(f"invalid: no signature by the log key {l_name}")
            return 1
    found = []
    for blob in signatures(lines, w_name, w_id):
        if len(blob) != 4 + 8 + 64:
            print(f"invalid: cosignature by {w_name} is {len(blob)} bytes, not 76")
            return 1
        (timestamp,) = struct.unpack(">Q", blob[4:12])
        message = f"cosignature/v1\ntime {timestamp}\n".encode() + text.encode()
        try:
            w_key.verify(blob[12:], message)
        except InvalidSignature:
            print(f"invalid: cosignature by {w_name} at {timestamp} does not verify")
            return 1
        found.append(timestamp)
    if not found:
        print(f"invalid: no cosignature by {w_name}")
        return 1
    print(f"valid: cosigned by {w_name} at {max(found)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
