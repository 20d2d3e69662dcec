"""Run the masked and compacted models kept by the ONNX tests in onnxruntime.

    EP_ONNX_KEEP=DIR cargo test --release --test onnx_pytorch
    python scripts/check_compaction_onnxruntime.py DIR

Prints, for each PyTorch fixture, the largest difference between the outputs of
the masked model and of the compacted one (same input as tests/data/onnx/*.json).
"""

import json
import pathlib
import sys

import numpy as np
import onnxruntime as ort


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    keep = pathlib.Path(sys.argv[1])
    data = pathlib.Path(__file__).resolve().parent.parent / "tests/data/onnx"
    for name in ["lenet5", "tinynet"]:
        rec = json.loads((data / f"{name}.json").read_text())
        x = np.array(rec["input"], dtype=np.float32).reshape([rec["batch"], *rec["input_shape"]])
        for f in [f"{name}.onnx", f"{name}_dynamo.onnx"]:
            outs = []
            for prefix in ["masked_", "compact_"]:
                s = ort.InferenceSession(str(keep / f"{prefix}{f}"))
                outs.append(s.run(None, {s.get_inputs()[0].name: x})[0])
            diff = float(np.abs(outs[0] - outs[1]).max())
            print(f"{f}: masked vs compact max abs difference {diff:.3g} (output scale {np.abs(outs[0]).max():.3g})")


if __name__ == "__main__":
    main()
