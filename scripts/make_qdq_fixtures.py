"""Run the QDQ models of the ONNX tests in onnxruntime and keep them as fixtures.

    EP_ONNX_KEEP=DIR cargo test --release -p energy-prune-onnx --features nn --test qdq
    python scripts/make_qdq_fixtures.py DIR

Checks every `qdq_*.onnx` in DIR with the ONNX checker, runs it in onnxruntime on
the input the test drew (DIR/qdq_input.json), copies the models into
crates/energy-prune-onnx/tests/data/onnx/ and writes their outputs to qdq.json
there, which `tests/qdq.rs` compares the crate's interpreter against.
"""

import json
import pathlib
import shutil
import sys

import numpy as np
import onnx
import onnxruntime as ort


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    keep = pathlib.Path(sys.argv[1])
    out = pathlib.Path(__file__).resolve().parent.parent / "crates/energy-prune-onnx/tests/data/onnx"
    rec = json.loads((keep / "qdq_input.json").read_text())
    x = np.array(rec["input"], dtype=np.float32).reshape([rec["batch"], *rec["input_shape"]])
    outputs = {}
    for f in sorted(keep.glob("qdq_*.onnx")):
        onnx.checker.check_model(onnx.load(str(f)), full_check=True)
        s = ort.InferenceSession(str(f), providers=["CPUExecutionProvider"])
        y = s.run(None, {s.get_inputs()[0].name: x})[0]
        outputs[f.name] = [float(v) for v in y.reshape(-1)]
        shutil.copy(f, out / f.name)
        print(f"{f.name}: onnxruntime {ort.__version__}, output scale {np.abs(y).max():.3g}")
    rec["outputs"] = outputs
    rec["onnxruntime"] = ort.__version__
    (out / "qdq.json").write_text(json.dumps(rec))


if __name__ == "__main__":
    main()
