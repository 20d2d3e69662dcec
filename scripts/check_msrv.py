"""Fail when a package in the dependency graph declares a rust-version newer than the
workspace's MSRV (argv[1]); reads `cargo metadata --format-version 1` on stdin."""
import json
import sys


def version(v):
    return tuple(int(x) for x in v.split(".")[:3]) + (0,) * (3 - len(v.split(".")))


msrv = version(sys.argv[1])
meta = json.load(sys.stdin)
newer = [
    f"{p['name']} {p['version']} needs Rust {p['rust_version']}"
    for p in meta["packages"]
    if p.get("rust_version") and version(p["rust_version"]) > msrv
]
for line in newer:
    print(line)
if newer:
    sys.exit(f"{len(newer)} packages need a newer Rust than the declared {sys.argv[1]}")
print(f"{len(meta['packages'])} packages, none needs a Rust newer than {sys.argv[1]}")
