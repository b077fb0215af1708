"""Read a secret from keyrelay's lookup API (standard library only).

    KEYRELAY_LOOKUP_URL=http://127.0.0.1:9470 KEYRELAY_TOKEN=... python3 keyrelay_lookup.py key-1

Usable as a module from a LiteLLM custom secret manager: keyrelay_get(name)
returns the value (a str, or bytes for a value that is not UTF-8, which the
API sends base64-encoded with "value_encoding": "base64"), or None when the
name is unknown in the token's scope. It raises KeyrelayError when the
lookup is refused or fails, and when no token is given or set.

As a script it writes a text value to stdout followed by a newline, and a
value that is not UTF-8 as its exact bytes (no newline added); it exits 1
when the name is unknown and 2 on any other failure (a message on stderr).
"""
import base64
import binascii
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request


class KeyrelayError(RuntimeError):
    def __init__(self, status, code, reason):
        prefix = f"{status} {code}" if status else code
        super().__init__(f"keyrelay lookup: {prefix}: {reason}")
        self.status, self.code, self.reason = status, code, reason


def keyrelay_get(name, base=None, token=None, timeout=5):
    base = base or os.environ.get("KEYRELAY_LOOKUP_URL", "http://127.0.0.1:9470")
    token = token or os.environ.get("KEYRELAY_TOKEN")
    if not token:
        raise KeyrelayError(None, "no_token", "set KEYRELAY_TOKEN to a token of keyrelay.lookup.clients")
    url = f"{base.rstrip('/')}/v1/secrets/{urllib.parse.quote(name, safe='/')}"
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            answer = json.load(resp)
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None
        try:
            body = json.load(e)
        except ValueError:
            body = {}
        raise KeyrelayError(e.code, body.get("error", "error"), body.get("reason", "")) from None
    except (urllib.error.URLError, OSError) as e:
        raise KeyrelayError(None, "unreachable", f"{base}: {getattr(e, 'reason', e)}") from None
    value = answer["value"]
    encoding = answer.get("value_encoding")
    if encoding == "base64":
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise KeyrelayError(200, "malformed", "value_encoding is base64 but the value is not") from None
    if encoding:
        raise KeyrelayError(200, "malformed", f"unknown value_encoding {encoding!r}")
    return value


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: keyrelay_lookup.py NAME", file=sys.stderr)
        sys.exit(2)
    try:
        value = keyrelay_get(sys.argv[1])
    except KeyrelayError as e:
        print(e, file=sys.stderr)
        sys.exit(2)
    if value is None:
        print("not found", file=sys.stderr)
        sys.exit(1)
    if isinstance(value, str):
        value = value.encode("utf-8") + b"\n"
    sys.stdout.buffer.write(value)
    sys.stdout.buffer.flush()
