#!/usr/bin/env python3
"""Cross-checks events/testdata/seal_vectors.json from Python, with the
`cryptography` package only (pip install cryptography): every positive
vector (A256GCM, A256GCM-KMS and the envelope algorithms) must seal to its
committed ct from key, nonce, plaintext and the documented AAD and open
back; keyring-wrapped data keys are unwrapped from edk; every negative
envelope vector must fail. Prints "N passed, 0 failed" and exits 0, or
names the failures and exits 1. Run by events/sealpython_test.go.
"""
import base64
import json
import sys

from cryptography.hazmat.primitives.ciphers.aead import AESGCM


def b64(s):
    return base64.b64decode(s)


def aad(alg, kid, team_id, key_id, generation):
    return b"\x00".join(s.encode() for s in
                        ["keyrelay-seal-v1", alg, kid, team_id, key_id, str(generation)])


def wrap_aad(alg, team_id):
    return ("keyrelay:alg=" + alg + "\x00keyrelay:team_id=" + team_id).encode()


def open_value(key, sv, b):
    return AESGCM(key).decrypt(b64(sv["nonce"]), b64(sv["ct"]),
                               aad(sv["alg"], sv["kid"], b["team_id"], b["key_id"], b["generation"]))


def unwrap_keyring(keyring, edk, alg, team_id):
    n = edk[0]
    member, rest = edk[1:1 + n].decode(), edk[1 + n:]
    return AESGCM(b64(keyring["keys"][member])).decrypt(rest[:12], rest[12:], wrap_aad(alg, team_id))


def main(path):
    f = json.load(open(path, encoding="utf-8"))
    passed, failed = 0, []

    def check(name, fn):
        nonlocal passed
        try:
            fn()
            passed += 1
        except Exception as e:  # noqa: BLE001 - report every failure
            failed.append("%s: %s" % (name, e))

    def positive(v, key, alg):
        b, sv = v["binding"], v["sealed"]
        assert sv["alg"] == alg, "alg"
        assert aad(alg, sv["kid"], b["team_id"], b["key_id"], b["generation"]).hex() == v["aad_hex"], "aad_hex"
        pt = bytes.fromhex(v["plaintext_hex"])
        ct = AESGCM(key).encrypt(b64(v["nonce"]), pt, bytes.fromhex(v["aad_hex"]))
        assert ct == b64(sv["ct"]), "ct differs"
        assert open_value(key, sv, b) == pt, "open"

    for v in f["vectors"]:
        check(v["name"], lambda v=v: positive(v, b64(v["key"]), "A256GCM"))
    for v in f["kms_vectors"]:
        check(v["name"], lambda v=v: positive(v, b64(v["data_key"]), "A256GCM-KMS"))
    for v in f.get("envelope_vectors", []):
        def env(v=v):
            key = b64(v["data_key"])
            if v.get("keyring"):
                assert unwrap_keyring(v["keyring"], b64(v["edk"]), v["alg"], v["binding"]["team_id"]) == key, "keyring unwrap"
            if v.get("wrap_aad_hex"):
                assert wrap_aad(v["alg"], v["binding"]["team_id"]).hex() == v["wrap_aad_hex"], "wrap_aad_hex"
            positive(v, key, v["alg"])
        check(v["name"], env)
    for v in f.get("envelope_negative_vectors", []):
        def neg(v=v):
            sv, b = v["sealed"], v["binding"]
            try:
                if v["error"] == "invalid":
                    return  # shape errors are the Go validator's; see the Go test
                if v.get("keyring"):
                    key = unwrap_keyring(v["keyring"], b64(sv["edk"]), sv["alg"], b["team_id"])
                else:
                    key = b64(v["data_key"])
                open_value(key, sv, b)
            except Exception:  # noqa: BLE001 - refusal expected
                return
            raise AssertionError("opened")
        check("negative/" + v["name"], neg)

    for msg in failed:
        print("FAIL", msg)
    print("%d passed, %d failed" % (passed, len(failed)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "seal_vectors.json"))
