"""The ONNX rule, checked against onnxruntime: what the crate accepts, it
evaluates as ONNX defines; what it writes, onnxruntime loads and runs the same.

    cargo run --release -p energy-prune-testing --example onnx_corpus -- DIR 2000
    python scripts/check_onnx_differential.py DIR [--fixtures FILE]

DIR is what the `onnx_corpus` example writes: structurally random models
(shared initializers, initializers listed as inputs, every broadcast shape,
operator forms of other opsets, ...) with the crate's outputs or refusal. For
every model the crate accepts, onnxruntime must load it and compute the crate's
outputs, and must load and run the file `save` writes and the compacted file to
the same outputs. Exit status 1 on any mismatch.

With --fixtures, onnxruntime's outputs are also written as the fixture file that
`crates/energy-prune-testing/tests/onnx_differential.rs` checks in CI (no Python
there): regenerate it with
    python scripts/check_onnx_differential.py DIR \
        --fixtures crates/energy-prune-testing/tests/data/onnx_differential.json

Needs numpy and onnxruntime.
"""

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

RTOL = 1e-4


def fnv1a(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def run(path: Path, x: np.ndarray):
    """onnxruntime's output, or the message of its refusal."""
    try:
        opts = ort.SessionOptions()
        opts.log_severity_level = 4
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        out = sess.run(None, {name: x})[0].astype(np.float32).ravel().tolist()
        # JSON has no NaN: written as null, as serde_json writes the crate's.
        return [None if math.isnan(v) else v for v in out], None
    except Exception as e:  # noqa: BLE001 - any refusal counts
        return None, str(e).splitlines()[0][:200]


def close(a, b) -> bool:
    if a is None or b is None or len(a) != len(b):
        return False
    for x, y in zip(a, b):
        x = float("nan") if x is None else x
        y = float("nan") if y is None else y
        if math.isnan(x) and math.isnan(y):
            continue
        if not abs(x - y) <= RTOL * (1.0 + max(abs(x), abs(y))):
            return False
    return True


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("dir", type=Path)
    ap.add_argument("--fixtures", type=Path)
    args = ap.parse_args()
    cases = json.loads((args.dir / "cases.json").read_text())
    fixtures, failures = [], []
    counts = {"both accept": 0, "both refuse": 0, "crate refuses only": 0}
    for c in cases:
        seed = c["seed"]
        model = args.dir / f"{seed}.onnx"
        assert str(fnv1a(model.read_bytes())) == c["fingerprint"], f"seed {seed}: stale file"
        x = np.array(c["input"], dtype=np.float32).reshape([c["batch"], *c["input_shape"]])
        ort_out, ort_err = run(model, x)
        fix = {"seed": seed, "fingerprint": c["fingerprint"], "ort": ort_out, "ort_refused": ort_err}
        if c["refused"] is None:
            if ort_out is None:
                failures.append(f"seed {seed} {c['twists']}: the crate accepts, onnxruntime refuses: {ort_err}")
            elif not close(c["output"], ort_out):
                failures.append(f"seed {seed} {c['twists']}: outputs differ: {c['output']} vs {ort_out}")
            else:
                counts["both accept"] += 1
            for kind, want in (("saved", c["output"]), ("compact", c["compact_output"])):
                out, err = run(args.dir / f"{seed}.{kind}.onnx", x)
                fix[f"ort_{kind}"] = out
                if out is None:
                    failures.append(f"seed {seed} {c['twists']}: onnxruntime refuses the {kind} file: {err}")
                elif not close(want, out):
                    failures.append(f"seed {seed} {c['twists']}: the {kind} file computes {out}, the crate {want}")
        else:
            counts["both refuse" if ort_out is None else "crate refuses only"] += 1
        fixtures.append(fix)
    print(f"{len(cases)} models: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    for f in failures[:50]:
        print("MISMATCH", f)
    if args.fixtures:
        text = json.dumps({"onnxruntime": ort.__version__, "cases": fixtures}, allow_nan=False)
        args.fixtures.write_text(text + "\n")
        print(f"wrote {args.fixtures}")
    print(f"{len(failures)} mismatches")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
