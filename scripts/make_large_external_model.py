"""Write an MLP of about 620 M float32 weights (2.5 GB, above the 2 GiB one .onnx
file can hold) as an ONNX model with its weights in external data, to measure
`energy-prune prune` on a model that needs it (docs/performance.md).

    python scripts/make_large_external_model.py DIR [HIDDEN]
    /usr/bin/time -v energy-prune prune --budget 0.5 DIR/mlp.onnx DIR/pruned.onnx

Needs numpy and onnx. HIDDEN (default 16384) sets the width of the two hidden
layers: 4096 -> HIDDEN -> HIDDEN -> HIDDEN -> 1000, all Gemm with ReLU.
"""

import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def main() -> None:
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    out = sys.argv[1]
    hidden = int(sys.argv[2]) if len(sys.argv) == 3 else 16384
    sizes = [4096, hidden, hidden, hidden, 1000]
    rng = np.random.default_rng(0)
    nodes, inits = [], []
    x = "input"
    nodes.append(helper.make_node("Flatten", [x], ["flat"], axis=1))
    x = "flat"
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        w = rng.standard_normal((b, a), dtype=np.float32) * np.float32(1 / np.sqrt(a))
        inits.append(numpy_helper.from_array(w, f"fc{i}.weight"))
        del w
        inits.append(numpy_helper.from_array(np.zeros(b, np.float32), f"fc{i}.bias"))
        y = f"fc{i}"
        nodes.append(helper.make_node("Gemm", [x, f"fc{i}.weight", f"fc{i}.bias"], [y], transB=1))
        x = y
        if i + 2 < len(sizes):
            nodes.append(helper.make_node("Relu", [x], [f"relu{i}"]))
            x = f"relu{i}"
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4096, 1, 1])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, 1000])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save_model(
        model,
        f"{out}/mlp.onnx",
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="mlp.onnx.data",
    )
    n = sum(a * b for a, b in zip(sizes, sizes[1:]))
    print(f"wrote {out}/mlp.onnx and mlp.onnx.data: {n} weights ({4 * n / 1e9:.2f} GB)")


if __name__ == "__main__":
    main()
