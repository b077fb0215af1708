"""Read a secret from keyrelay's lookup API (standard library only).

    KEYRELAY_LOOKUP_URL=http://127.0.0.1:9470 KEYRELAY_TOKEN=... python3 keyrelay_lookup.py key-1

Usable as a module from a LiteLLM custom secret manager: keyrelay_get(name)
returns the value, or None when the name is unknown in the token's scope.
"""
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request


class KeyrelayError(RuntimeError):
    def __init__(self, status, code, reason):
        super().__init__(f"keyrelay lookup: {status} {code}: {reason}")
        self.status, self.code, self.reason = status, code, reason


def keyrelay_get(name, base=None, token=None, timeout=5):
    base = base or os.environ.get("KEYRELAY_LOOKUP_URL", "http://127.0.0.1:9470")
    token = token or os.environ["KEYRELAY_TOKEN"]
    url = f"{base.rstrip('/')}/v1/secrets/{urllib.parse.quote(name, safe='/')}"
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.load(resp)["value"]
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None
        try:
            body = json.load(e)
        except ValueError:
            body = {}
        raise KeyrelayError(e.code, body.get("error", "error"), body.get("reason", "")) from None


if __name__ == "__main__":
    try:
        value = keyrelay_get(sys.argv[1])
    except KeyrelayError as e:
        print(e, file=sys.stderr)
        sys.exit(2)
    if value is None:
        print("not found", file=sys.stderr)
        sys.exit(1)
    print(value)
