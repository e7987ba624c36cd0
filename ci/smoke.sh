#!/usr/bin/env bash
# Smoke test of a deployed feature server: /health answers, and a vector of the
# fraud_detection_v1 service comes back with at least one value present.
set -euo pipefail
url="${1:?usage: ci/smoke.sh FEATURE_SERVER_URL}"
curl -fsS --max-time 10 --retry 10 --retry-delay 3 --retry-all-errors "$url/health" >/dev/null
body='{"feature_service": "fraud_detection_v1",
       "entities": {"customer_id": [1], "merchant_id": [1], "amount": [25.0]}}'
curl -fsS --max-time 10 -H 'Content-Type: application/json' -d "$body" \
  "$url/get-online-features" | python3 -c '
import json, sys
reply = json.load(sys.stdin)
names = reply["metadata"]["feature_names"]
present = [
    name for name, result in zip(names, reply["results"])
    if result["statuses"][0] == "PRESENT" and name not in ("customer_id", "merchant_id", "amount")
]
print(f"smoke test: {len(present)} of {len(names)} values present")
sys.exit(0 if present else 1)
'
