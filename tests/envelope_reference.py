#!/usr/bin/env python3
"""An independent reader of chatc envelopes, written from chatc(1)'s
"ENVELOPE FORMAT" section only (not from the Rust code), with Python's
`cryptography` package. It checks that the page is precise enough to build a
compatible implementation.

Usage:
  envelope_reference.py vector              decrypt the man page's test vector
  envelope_reference.py open SECRET ROOM SENDER ENVELOPE
                                            print the plaintext of an envelope
"""
import base64
import hashlib
import hmac
import struct
import sys

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

LABEL = b"chatd-e2e-v1"


def b64url_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def is_random_secret(secret):
    if len(secret) != 43:
        return False
    try:
        return len(b64url_decode(secret)) == 32
    except Exception:
        return False


def room_key(secret, room):
    room = room.lower().encode()
    if is_random_secret(secret):
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=LABEL,
                    info=b"room key\x00" + room).derive(b64url_decode(secret))
    return hashlib.pbkdf2_hmac("sha256", secret.encode(),
                               LABEL + b" passphrase\x00" + room, 600000, 32)


def open_envelope(secret, room, sender, envelope):
    assert envelope.startswith("E1."), "not a version 1 envelope"
    raw = b64url_decode(envelope[3:])
    key = room_key(secret, room)
    key_id, nonce, sealed = raw[:4], raw[4:16], raw[16:]
    if key_id != hmac.new(key, b"chatd-e2e-v1 key id", hashlib.sha256).digest()[:4]:
        raise ValueError("wrong room key")
    aad = LABEL + b"\x00" + room.lower().encode() + b"\x00" + sender.encode()
    plain = AESGCM(key).decrypt(nonce, sealed, aad)
    version, kind = plain[0], chr(plain[1])
    (ts,) = struct.unpack(">Q", plain[2:10])
    body = plain[10:]
    assert version == 1
    if kind in "ta":
        return kind, ts, body.decode()
    n = body[0]
    name = body[1:1 + n].decode()
    m = body[1 + n]
    mime = body[2 + n:2 + n + m].decode()
    data = body[2 + n + m:]
    return kind, ts, (name, mime, data)


if __name__ == "__main__":
    if sys.argv[1] == "vector":
        kind, ts, text = open_envelope(
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8", "#Secret-Club", "alice",
            "E1.dvs4DKChoqOkpaanqKmqq7jTJqLh0PcLAotSfR4VZTsv3DGYSXmuKsV-nbWF-PhFU_ojKvcN")
        assert (kind, ts, text) == ("t", 1700000000000, "meet at noon"), (kind, ts, text)
        print("vector ok: meet at noon")
    else:
        kind, ts, body = open_envelope(*sys.argv[2:6])
        if kind in "ta":
            print(f"{kind} {ts} {body}")
        else:
            name, mime, data = body
            print(f"{kind} {ts} {name} {mime} {len(data)} {hashlib.sha256(data).hexdigest()}")
