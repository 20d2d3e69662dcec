"""Run the QDQ models of the ONNX tests in onnxruntime and keep them as fixtures.

    EP_ONNX_KEEP=DIR cargo test --release -p energy-prune-onnx --features nn --test qdq
    python scripts/make_qdq_fixtures.py DIR

Checks every `qdq_*.onnx` in DIR with the ONNX checker, runs it in onnxruntime on
the input the test drew (DIR/qdq_input.json), copies the models into
crates/energy-prune-onnx/tests/data/onnx/ and writes their outputs to qdq.json
there, which `tests/qdq.rs` compares the crate's interpreter against. Also
quantizes the PyTorch LeNet-5 fixture (lenet5.onnx) with onnxruntime's static
int8 quantization (QDQ form, per channel, uint8 activations, calibrated on seeded
random images) into qdq_ort_lenet5.onnx, with its outputs on lenet5.json's input:
a QDQ file written by another tool, which the import must read at int8.
"""

import json
import pathlib
import shutil
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static


class Images(CalibrationDataReader):
    """Eight seeded batches of image-like inputs of the model's input shape."""

    def __init__(self, name: str, shape: list) -> None:
        rng = np.random.default_rng(0)
        self.batches = iter(
            [{name: np.maximum(rng.uniform(-1, 3, size=shape), 0).astype(np.float32)} for _ in range(8)]
        )

    def get_next(self):
        return next(self.batches, None)


def run_at(model: pathlib.Path, x: np.ndarray, level) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = level
    s = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


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
        # ORT_ENABLE_BASIC: constant folding and the fusions that keep the numbers.
        # The extended fusions run QDQ groups in integer kernels (QLinearConv,
        # QGemm after converting int8 activations to uint8), whose u8 x s8 products
        # saturate on x86 CPUs without VNNI (onnxruntime's documented limitation:
        # its quantizer offers reduce_range for them); their outputs are printed.
        y = run_at(f, x, ort.GraphOptimizationLevel.ORT_ENABLE_BASIC)
        fused = run_at(f, x, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
        outputs[f.name] = [float(v) for v in y.reshape(-1)]
        shutil.copy(f, out / f.name)
        print(f"{f.name}: onnxruntime {ort.__version__}, output scale {np.abs(y).max():.3g}, "
              f"fused integer kernels differ by {np.abs(fused - y).max():.3g}")
    rec["outputs"] = outputs
    rec["onnxruntime"] = ort.__version__
    rec["graph_optimization_level"] = "ORT_ENABLE_BASIC"
    torch_rec = json.loads((out / "lenet5.json").read_text())
    shape = [torch_rec["batch"], *torch_rec["input_shape"]]
    src = out / "lenet5.onnx"
    name = ort.InferenceSession(str(src)).get_inputs()[0].name
    dst = out / "qdq_ort_lenet5.onnx"
    quantize_static(
        str(src), str(dst), Images(name, shape), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
    )
    xt = np.array(torch_rec["input"], dtype=np.float32).reshape(shape)
    rec["ort_static"] = {"model": dst.name}
    # Default: QDQ groups fused into integer kernels (QLinearConv, ...), which round
    # their requantization their own way; without graph optimisations onnxruntime
    # runs each node as ONNX defines it.
    for key, level in [("outputs", None), ("outputs_unfused", ort.GraphOptimizationLevel.ORT_DISABLE_ALL)]:
        opts = ort.SessionOptions()
        if level is not None:
            opts.graph_optimization_level = level
        s = ort.InferenceSession(str(dst), opts, providers=["CPUExecutionProvider"])
        y = s.run(None, {name: xt})[0]
        rec["ort_static"][key] = [float(v) for v in y.reshape(-1)]
        print(f"{dst.name} ({key}): onnxruntime static int8, output scale {np.abs(y).max():.3g}")
    (out / "qdq.json").write_text(json.dumps(rec))


if __name__ == "__main__":
    main()
