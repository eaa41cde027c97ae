"""GET argv[1] through the environment's proxy; print the status (and the body on error)."""

import sys
import urllib.error
import urllib.request

try:
    print(urllib.request.urlopen(sys.argv[1], timeout=20).status)
except urllib.error.HTTPError as exc:
    print(exc.code, exc.read().decode())
