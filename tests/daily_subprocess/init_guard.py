"""The init guard: many transports' worth of init calls, then a client, in one process."""

import json

from agenthuman_local.transports.daily import ensure_initialized, load_daily

lib = load_daily()
assert load_daily() is lib
for _ in range(3):
    ensure_initialized(lib)
client = lib.CallClient()
print(json.dumps({"participants": sorted(client.participants())}))
client.release()
