"""Evaluate the ONNX models of `energy-prune lab quantize` in onnxruntime.

    cargo run --release -p energy-prune-cli -- lab quantize --out quantize-results
    python scripts/check_qdq_onnxruntime.py quantize-results [--data data/mnist]
        [--cli target/release/energy-prune] [--calibration 512]

For every exported point (quantize-results/onnx/<method>_<budget>.onnx, QDQ at the
precision the run chose) the MNIST test accuracy in onnxruntime beside the crate's
own evaluation recorded in quantize.json; exits 1 if any differs by more than 0.1
point. onnxruntime runs at ORT_ENABLE_BASIC (constant folding and the fusions
that keep the numbers); the accuracy at its default level (QDQ groups fused into
integer kernels, int8 activations converted to uint8) is printed beside it: on
x86 CPUs without VNNI those u8 x s8 kernels saturate their 16-bit pair sums
(onnxruntime's documented limitation, which its own quantizer meets with
reduce_range), so that column is the runtime's, not the model's. Then the outside baseline: onnxruntime's static int8 quantization of the
dense model (QDQ, per-channel int8 weights, uint8 activations calibrated on the
first --calibration training images), its accuracy, and its energy on the crate's
systolic model (`energy-prune report --onnx`, which reads the QDQ file at its
precision) as a fraction of the dense 16-bit energy, against every budget.
Writes quantize-results/onnxruntime.json.
"""

import argparse
import gzip
import json
import pathlib
import subprocess
import sys

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

MEAN, STD = 0.1307, 0.3081


def images(path: pathlib.Path, pad: int, normalization: str, limit) -> np.ndarray:
    """The crate's MNIST inputs: zero-padded pixels, then `p * scale + shift` in float32
    (the padding takes the normalised value of black)."""
    raw = gzip.open(path).read()
    n, rows, cols = (int.from_bytes(raw[i : i + 4], "big") for i in (4, 8, 12))
    p = np.frombuffer(raw, np.uint8, offset=16).reshape(n, rows, cols)
    if limit is not None:
        p = p[:limit]
    p = np.pad(p, ((0, 0), (pad, pad), (pad, pad))).astype(np.float32)
    scale, shift = {
        "unit": (1 / 255, 0.0),
        "scale": (1 / (255 * STD), 0.0),
        "standardize": (1 / (255 * STD), -MEAN / STD),
    }[normalization]
    x = p * np.float32(scale) + np.float32(shift)
    return x[:, None, :, :]


def labels(path: pathlib.Path, limit) -> np.ndarray:
    y = np.frombuffer(gzip.open(path).read(), np.uint8, offset=8).astype(np.int64)
    return y if limit is None else y[:limit]


def accuracy(model: pathlib.Path, x: np.ndarray, y: np.ndarray, level=ort.GraphOptimizationLevel.ORT_ENABLE_BASIC) -> float:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = level
    s = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    pred = np.concatenate([s.run(None, {name: x[i : i + 500]})[0].argmax(1) for i in range(0, len(x), 500)])
    return float((pred == y).mean())


class Calibration(CalibrationDataReader):
    def __init__(self, name: str, x: np.ndarray) -> None:
        self.batches = iter([{name: x[i : i + 64]} for i in range(0, len(x), 64)])

    def get_next(self):
        return next(self.batches, None)


def energy(cli: str, model: pathlib.Path) -> float:
    out = subprocess.run([cli, "report", "--onnx", str(model), "--json"], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["total"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", type=pathlib.Path)
    ap.add_argument("--data", type=pathlib.Path, default=None, help="MNIST directory (default: the run's)")
    ap.add_argument("--cli", default="target/release/energy-prune")
    ap.add_argument("--calibration", type=int, default=512)
    a = ap.parse_args()
    rec = json.loads((a.results / "quantize.json").read_text())
    data = a.data or pathlib.Path(rec["settings"]["data"])
    pad, norm = rec["input"]["pad"], rec["input"]["normalization"]
    limit = rec["settings"]["test_images"]
    x = images(data / "t10k-images-idx3-ubyte.gz", pad, norm, limit)
    y = labels(data / "t10k-labels-idx1-ubyte.gz", limit)
    print(f"onnxruntime {ort.__version__}, {len(x)} test images")
    print(f"{'model':<24} {'energy':>8} {'crate %':>9} {'onnxruntime %':>14} {'diff':>7} {'fused kernels %':>16}")
    rows, worst = [], 0.0
    for p in rec["points"]:
        if not p.get("onnx") or p.get("failed"):
            continue
        acc = accuracy(a.results / p["onnx"], x, y)
        fused = accuracy(a.results / p["onnx"], x, y, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
        diff = 100 * (acc - p["test_accuracy"])
        worst = max(worst, abs(diff))
        rows.append({"onnx": p["onnx"], "method": p["method"], "budget": p["budget"],
                     "energy_ratio": p["energy_ratio"], "crate_accuracy": p["test_accuracy"],
                     "onnxruntime_accuracy": acc, "onnxruntime_fused_accuracy": fused})
        print(f"{p['onnx']:<24} {p['energy_ratio']:>8.4f} {100 * p['test_accuracy']:>9.2f} {100 * acc:>14.2f} "
              f"{diff:>+7.2f} {100 * fused:>16.2f}")
    dense = a.results / rec["dense"]["onnx"]
    static = a.results / "onnx/onnxruntime_static_int8.onnx"
    xc = images(data / "train-images-idx3-ubyte.gz", pad, norm, a.calibration)
    name = ort.InferenceSession(str(dense)).get_inputs()[0].name
    quantize_static(str(dense), str(static), Calibration(name, xc), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    acc = accuracy(static, x, y, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    ratio = energy(a.cli, static) / rec["dense"]["energy_16bit"]
    budgets = sorted({p["budget"] for p in rec["points"]})
    fits = [b for b in budgets if ratio <= b]
    print(f"\nonnxruntime static int8 of the dense model: accuracy {100 * acc:.2f} %, "
          f"energy {ratio:.4f} of the dense 16-bit energy; fits budgets {fits or 'none of ' + str(budgets)}")
    out = {"onnxruntime": ort.__version__, "graph_optimization_level": "ORT_ENABLE_BASIC", "test_images": len(x), "points": rows, "worst_difference_points": worst,
           "static_int8": {"onnx": "onnx/onnxruntime_static_int8.onnx", "accuracy": acc, "energy_ratio": ratio,
                           "fits_budgets": fits, "calibration_images": a.calibration}}
    (a.results / "onnxruntime.json").write_text(json.dumps(out, indent=1) + "\n")
    print(f"largest difference onnxruntime vs crate: {worst:.3f} points (limit 0.1)")
    sys.exit(0 if worst <= 0.1 else 1)


if __name__ == "__main__":
    main()
