"""The official Standard Webhooks library as an independent peer of `bridgehead webhook`.

    standardwebhooks_peer.py sign SECRET MSG_ID UNIX_TS PAYLOAD_FILE    -> prints the signature header value
    standardwebhooks_peer.py verify SECRET PAYLOAD_FILE HEADERS_JSON    -> exit 0 when valid, 1 (with the error) when not
"""
import json
import sys
from datetime import datetime, timezone

from standardwebhooks.webhooks import Webhook


def main() -> int:
    mode, secret = sys.argv[1], sys.argv[2]
    wh = Webhook(secret)
    if mode == "sign":
        msg_id, ts, path = sys.argv[3], int(sys.argv[4]), sys.argv[5]
        payload = open(path, "rb").read().decode()
        print(wh.sign(msg_id, datetime.fromtimestamp(ts, tz=timezone.utc), payload))
        return 0
    path, headers = sys.argv[3], json.loads(sys.argv[4])
    payload = open(path, "rb").read()
    try:
        wh.verify(payload, headers)
    except Exception as e:  # the library raises WebhookVerificationError
        print(f"invalid: {e}")
        return 1
    print("valid")
    return 0


if __name__ == "__main__":
    sys.exit(main())
