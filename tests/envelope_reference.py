#!/usr/bin/env python3
"""An independent reader of chatc envelopes, written from chatc(1)'s
"ENVELOPE FORMAT" section only (not from the Rust code), with Python's
`cryptography` package. It checks that the page is precise enough to build a
compatible implementation.

It also reads direct-message envelopes, key bundles and safety numbers from
chatc(1)'s "DIRECT MESSAGE ENVELOPE" section.

Usage:
  envelope_reference.py vector              decrypt the man page's test vector
  envelope_reference.py dm-vector           the same for its direct-message vector
  envelope_reference.py more-vectors        rebuild the "Further test vectors"
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


def key_id(key):
    return hmac.new(key, b"chatd-e2e-v1 key id", hashlib.sha256).digest()[:4]


def plaintext(kind, ts, body):
    """Version 1 plaintext: version, kind, time, body."""
    if kind in "ta":
        rest = body.encode()
    else:
        name, mime, data = body
        rest = bytes([len(name)]) + name.encode() + bytes([len(mime)]) + mime.encode() + data
    return bytes([1, ord(kind)]) + struct.pack(">Q", ts) + rest


def b64url_encode(b):
    return base64.urlsafe_b64encode(b).decode().rstrip("=")


def seal(secret, room, sender, kind, ts, body, nonce, signer_seed=None):
    """An E1 envelope, or E2 signed by the Ed25519 key of signer_seed."""
    key = room_key(secret, room)
    kid = key_id(key)
    plain = plaintext(kind, ts, body)
    folded_room = room.lower().encode()
    if signer_seed is None:
        aad = LABEL + b"\x00" + folded_room + b"\x00" + sender.encode()
        return "E1." + b64url_encode(kid + nonce + AESGCM(key).encrypt(nonce, plain, aad))
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives import serialization
    signer = Ed25519PrivateKey.from_private_bytes(signer_seed)
    pub = signer.public_key().public_bytes(serialization.Encoding.Raw,
                                           serialization.PublicFormat.Raw)
    signed = (b"chatd-e2e-v2 sig\x00" + folded_room + b"\x00" + sender.lower().encode()
              + b"\x00" + kid + nonce + plain)
    inner = pub + signer.sign(signed) + plain
    aad = b"chatd-e2e-v2\x00" + folded_room + b"\x00" + sender.encode()
    return "E2." + b64url_encode(kid + nonce + AESGCM(key).encrypt(nonce, inner, aad))


def more_vectors():
    secret = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"
    nonce = bytes.fromhex("a0a1a2a3a4a5a6a7a8a9aaab")
    ts = 1700000000000
    text = "meet at noon"
    cases = [
        ("passphrase", "correct horse battery staple", "#Secret-Club", "alice", "t", text, None,
         "0f67c7811d545fc2b3f1d1f26e278d7ef8d32baf7f2f9f82425ece82e2ea2a70", "4522f9cc",
         "E1.RSL5zKChoqOkpaanqKmqq5vaF-FHghHadViibZwhsFjpqnpoGnl6Wd99iOdtkAHcpBk4-88W"),
        ("private room", secret, "~Qx7Kp2", "alice", "t", text, None,
         "769f4ab8c46cca9d8eff81796796d079e472b154c66b40fef783f9e5ec1d9b7b", "57bf435e",
         "E1.V79DXqChoqOkpaanqKmqq6WaXVU3eXIsgLO4piap42-oSjM3OyYneS6mADuUm9-58En8Soai"),
        ("mixed-case nick", secret, "#Secret-Club", "Alice", "t", text, None,
         "ec582c841cfb3ef50e972713490bef6b9bca71446ad92f80f94d0d9958095a18", "76fb380c",
         "E1.dvs4DKChoqOkpaanqKmqq7jTJqLh0PcLAotSfR4VZTsv3DGYSXlLqn6pFZdJpR8Rtt51ThPp"),
        ("file", secret, "#Secret-Club", "alice", "f", ("notes.txt", "text/plain", b"hello\n"), None,
         "ec582c841cfb3ef50e972713490bef6b9bca71446ad92f80f94d0d9958095a18", "76fb380c",
         "E1.dvs4DKChoqOkpaanqKmqq7jBJqLh0PcLAos2dhQVICl1iCeDLGNaQD87bHhuayFj3svFJHNAWT7lE8cgA"
         "Lq0icWL1Q9c"),
        ("signed", secret, "#Secret-Club", "Alice", "t", text, bytes(range(32)),
         "ec582c841cfb3ef50e972713490bef6b9bca71446ad92f80f94d0d9958095a18", "76fb380c",
         "E2.dvs4DKChoqOkpaanqKmqq7oGIR0TlShQd_viAJwqhcM8GInHvbIyZ1bImnAdV36zSZ_tZTeCxWtto9g0Bl"
         "ocJhLmOTOZV_CxOKeceIag8N_xqHjVoCNOQhPGyQRMivYs7sCZ-4f2SGpcNei2MqvQtlUYVM0TvJ-qNnC5KGz"
         "5HL9cUjTLI_k7ngc73omgY8KcPGO4WV7g"),
    ]
    for what, sec, room, sender, kind, body, seed, key_hex, id_hex, want in cases:
        key = room_key(sec, room)
        assert key.hex() == key_hex, (what, key.hex())
        assert key_id(key).hex() == id_hex, (what, key_id(key).hex())
        got = seal(sec, room, sender, kind, ts, body, nonce, seed)
        assert got == want, (what, got)
        if seed is None:
            assert open_envelope(sec, room, sender, got) == (kind, ts, body), what
    assert plaintext("f", ts, ("notes.txt", "text/plain", b"hello\n")).hex() == (
        "0166" "0000018bcfe56800" "09" "6e6f7465732e747874" "0a" "746578742f706c61696e"
        "68656c6c6f0a")
    try:
        open_envelope(secret, "#Secret-Club", "alice", cases[2][-1])
        raise AssertionError("a nick of another case opened")
    except Exception as e:
        assert type(e).__name__ == "InvalidTag", e
    print("more vectors ok:", ", ".join(c[0] for c in cases))


def folded(nick):
    n = nick.lower().encode()
    return bytes([len(n)]) + n


def parse_bundle(nick, bundle):
    """(ed25519, x25519) public keys of a K1 bundle, its signature checked."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    assert bundle.startswith("K1.")
    raw = b64url_decode(bundle[3:])
    assert len(raw) == 128
    ed, x, sig = raw[:32], raw[32:64], raw[64:]
    Ed25519PublicKey.from_public_bytes(ed).verify(sig, b"chatd-key-v1" + folded(nick) + x)
    return ed, x


def safety_number(a, a_ed, b, b_ed):
    parts = sorted([(a.lower().encode(), a_ed), (b.lower().encode(), b_ed)])
    parts = [(bytes([len(n)]) + n, ed) for n, ed in parts]
    d = hashlib.sha256(b"chatd-safety-v1" + b"".join(n + ed for n, ed in parts)).digest()
    return " ".join("%05d" % (int.from_bytes(d[i:i + 5], "big") % 100000) for i in range(0, 30, 5))


def open_dm(my_x_secret, sender, recipient, sender_ed, envelope):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
    from cryptography.hazmat.primitives import serialization
    assert envelope.startswith("D1.")
    raw = b64url_decode(envelope[3:])
    eph, slots, nonce, sealed = raw[:32], raw[32:128], raw[128:140], raw[140:]
    header = b"chatd-dm-v1" + folded(sender) + folded(recipient)
    me = X25519PrivateKey.from_private_bytes(my_x_secret)
    my_pub = me.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    shared = me.exchange(X25519PublicKey.from_public_bytes(eph))
    slot_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"chatd-dm-v1",
                    info=b"slot\x00" + eph + my_pub).derive(shared)
    key = None
    for slot in (slots[:48], slots[48:]):
        try:
            key = AESGCM(slot_key).decrypt(b"\x00" * 12, slot, header)
            break
        except Exception:
            pass
    if key is None:
        raise ValueError("not for this key")
    inner = AESGCM(key).decrypt(nonce, sealed, header + eph + slots)
    msg_id, sig, body = inner[:16], inner[16:80], inner[80:]
    Ed25519PublicKey.from_public_bytes(sender_ed).verify(sig, header + eph + msg_id + body)
    assert body[0] == 1
    (ts,) = struct.unpack(">Q", body[2:10])
    return chr(body[1]), ts, body[10:].decode()


def dm_vector():
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives import serialization
    raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
    seq = lambda start: bytes(range(start, start + 32))
    alice_ed = Ed25519PrivateKey.from_private_bytes(seq(0x00)).public_key().public_bytes(*raw)
    bob_ed = Ed25519PrivateKey.from_private_bytes(seq(0x40)).public_key().public_bytes(*raw)
    alice_bundle = ("K1.A6EHv_POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg1gHLWNliA0a7qMprfkSE4O"
                    "FHtIaKOO3XpZdDSzRZiVGEj22LOyUugNC3aVpjHHvbfyAG_fxL4zFynb2YhKbwhTNiz"
                    "lnquzHpwOeJqSbB_RnW549GlThC2DI1QBWBn9QY")
    bob_bundle = ("K1.JUO5L_EJVRFHatyDadtt3JM2ZaEZeN2hQE7hBmypVZ1nXdV07XeJMQs9LnaB83kLR"
                  "mx3OxUh_s82V3lYNx6lL7qWKlroeXb4mv1fwXuh3J2Vk0VsLYfH-eb-g4XfERAYUOUU"
                  "6yYBURljO_1vdq15m53skW6F7ABZPytpwunFhAM")
    assert parse_bundle("alice", alice_bundle)[0] == alice_ed
    assert parse_bundle("bob", bob_bundle)[0] == bob_ed
    from cryptography.exceptions import InvalidSignature
    try:
        parse_bundle("mallory", alice_bundle)
        moved = True
    except InvalidSignature:
        moved = False
    assert not moved, "a bundle moved to another nick verified"
    n = safety_number("alice", alice_ed, "bob", bob_ed)
    assert n == "22650 81191 23699 69588 83930 93417", n
    envelope = ("D1.ST6C_HRGSlkmiBdiPSBTxeuOLMSpiLT-4XnsawENUx3BpGk6ZOFmBygwMr6qTjouCXy"
                "lWJjItmgkVfGGywcb-Hbm0bpdug1cwwSQZvxRkNgZOZcr63nH1_P4Bl2g9dNbAQthKXFa9"
                "MJ-FT6ZhzNKTMdD5hXylDXh6PS0Z6lw9trAwcLDxMXGx8jJysucsekg6hU0UjafSRctucp"
                "68AatB_Z8RK9T6htHrdx3o_oqoRA-9e_QK3Lbzg_FZ5XSIyxcwf5k0LV_2vF--aE2TlwSR"
                "dzHbSec-tVR_6CZcZwvq6SsQlVHykh--kFUmRjugBcGKSU8gXpk049C4iMeP-Br1Lnx")
    for reader in (seq(0x60), seq(0x20)):  # bob, then alice reading her own copy
        got = open_dm(reader, "alice", "bob", alice_ed, envelope)
        assert got == ("t", 1700000000000, "meet at noon"), got
    try:
        open_dm(seq(0x60), "carol", "bob", alice_ed, envelope)
        raise AssertionError("re-addressed envelope opened")
    except ValueError:
        pass
    print("dm vector ok: meet at noon, safety number", n)


if __name__ == "__main__":
    if sys.argv[1] == "dm-vector":
        dm_vector()
    elif sys.argv[1] == "more-vectors":
        more_vectors()
    elif sys.argv[1] == "vector":
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
