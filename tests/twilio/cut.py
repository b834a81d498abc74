#!/usr/bin/env python3
"""Cuts the operations otpd's tests use out of Twilio's full OpenAPI description.

Usage: python3 tests/twilio/cut.py FULL_SPEC.json > tests/twilio/twilio_api_v2010.subset.json

Keeps, for each (path, method) in OPERATIONS, that operation and the path's own keys
(servers, description, x-twilio), every component schema they reference (followed
transitively), the security schemes, the tags the kept operations name, and the
document's top-level keys. Nothing inside a kept object is changed.
"""

import json
import sys

# (path, method): why the tests need it.
OPERATIONS = [
    ("/2010-04-01/Accounts/{AccountSid}/Messages.json", "post"),  # CreateMessage: the sender
    ("/2010-04-01/Accounts/{AccountSid}/Messages.json", "get"),  # ListMessage: "did it go out?"
    ("/2010-04-01/Accounts/{Sid}.json", "get"),  # FetchAccount: free credential check
    ("/2010-04-01/Accounts/{AccountSid}/Calls.json", "post"),  # CreateCall: voice codes
]
METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
SCHEMA_REF = "#/components/schemas/"


def refs(node):
    """Every schema name a $ref inside node points at."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            if not ref.startswith(SCHEMA_REF):
                sys.exit(f"unexpected $ref {ref}: only component schemas are followed")
            yield ref[len(SCHEMA_REF):]
        for value in node.values():
            yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def cut(full):
    paths = {}
    for path, method in OPERATIONS:
        item = full["paths"][path]
        kept = paths.setdefault(path, {k: v for k, v in item.items() if k not in METHODS})
        kept[method] = item[method]

    schemas = full["components"]["schemas"]
    wanted, queue = set(), list(refs(paths))
    while queue:
        name = queue.pop()
        if name not in wanted:
            wanted.add(name)
            queue.extend(refs(schemas[name]))

    tags = {t for item in paths.values() for k, op in item.items() if k in METHODS
            for t in op.get("tags", [])}
    out = {}
    for key, value in full.items():
        if key == "paths":
            out[key] = paths
        elif key == "components":
            out[key] = {
                "securitySchemes": value["securitySchemes"],
                "schemas": {n: s for n, s in value["schemas"].items() if n in wanted},
            }
        elif key == "tags":
            out[key] = [t for t in value if t["name"] in tags]
        else:
            out[key] = value
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    with open(sys.argv[1], encoding="utf-8") as f:
        full = json.load(f)
    json.dump(cut(full), sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")
