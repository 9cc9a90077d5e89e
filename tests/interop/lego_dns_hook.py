"""Hook program for lego's ``exec`` DNS provider that edits pebble-challtestsrv's TXT records.

lego (checked with 4.9) runs the program named by EXEC_PATH as
``PROGRAM present FQDN VALUE`` before it requests validation and as
``PROGRAM cleanup FQDN VALUE`` afterwards. FQDN is ``_acme-challenge.<name>.`` and
VALUE is the dns-01 digest. The management API base URL comes from the
CHALLTESTSRV_MANAGEMENT_URL environment variable.

This file runs as a script under the harness's Python, so it imports only the
standard library.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request

MANAGEMENT_URL_VARIABLE = "CHALLTESTSRV_MANAGEMENT_URL"
REQUEST_TIMEOUT_SECONDS = 5


def main(argv: list[str]) -> int:
    """Publish or remove the TXT record named in ``argv`` and return the exit status."""
    if len(argv) != 4 or argv[1] not in ("present", "cleanup"):
        print(f"usage: {argv[0]} present|cleanup FQDN VALUE", file=sys.stderr)
        return 2
    management_url = os.environ.get(MANAGEMENT_URL_VARIABLE)
    if not management_url:
        print(f"{MANAGEMENT_URL_VARIABLE} is not set", file=sys.stderr)
        return 2

    action, fqdn, value = argv[1], argv[2], argv[3]
    if action == "present":
        path, body = "/set-txt", {"host": fqdn, "value": value}
    else:
        path, body = "/clear-txt", {"host": fqdn}

    # challtestsrv is on loopback, so a proxy from the environment must not be used.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(
        management_url.rstrip("/") + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with opener.open(request, timeout=REQUEST_TIMEOUT_SECONDS):
            pass
    except OSError as error:
        print(f"challtestsrv {path} for {fqdn} failed: {error}", file=sys.stderr)
        return 1
    print(f"challtestsrv {path} for {fqdn} done")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
