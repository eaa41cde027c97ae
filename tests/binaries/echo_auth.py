"""GET argv[1] through the proxy with a placeholder in Authorization; print the status and
what the upstream saw (it echoes the header)."""

import sys
import urllib.error
import urllib.request

req = urllib.request.Request(sys.argv[1], headers={
    "Authorization": "Bearer openshell:resolve:env:MY_TOKEN"})
try:
    with urllib.request.urlopen(req, timeout=20) as resp:
        print(resp.status, resp.read().decode())
except urllib.error.HTTPError as exc:
    print(exc.code, exc.read().decode())
