"""A webhook receiver written the way the v1 spec tells integrators to
write one (Webhooks -> Verifying signatures -> "Python (Flask)"), so the
control plane's tests show that deliveries verify with the spec's own
recipe, byte for byte. The handler below is the spec's, verbatim, apart
from where SECRET comes from and the call that records what arrived.

Usage: CODEB_SECRET=whsec_... python3 webhook_receiver.py PORT LOG_FILE

Each delivery that verifies appends one JSON line to LOG_FILE; one that
does not is refused with 401, as the spec says.
"""

import hashlib
import hmac
import json
import os
import sys

from flask import Flask, request, abort

SECRET = os.environ["CODEB_SECRET"].encode()  # from /webhooks-admin.html on create
LOG_FILE = sys.argv[2]

app = Flask(__name__)


def record(event, delivery, body):
    with open(LOG_FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps({
            "event": event,
            "delivery": delivery,
            "attempt": request.headers.get("X-CodeB-Attempt", ""),
            "bodySha256": hashlib.sha256(body).hexdigest(),
            "payload": json.loads(body),
        }) + "\n")


@app.post("/codeb-webhook")
def codeb_webhook():
    body = request.get_data()  # raw bytes -- DO NOT use request.json here
    got  = request.headers.get("X-CodeB-Signature", "")
    want = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(got, want):
        abort(401)
    event = request.headers.get("X-CodeB-Event", "")
    delivery = request.headers.get("X-CodeB-Delivery-Id", "")
    # ... process event ...
    record(event, delivery, body)
    return "", 200


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(sys.argv[1]))
