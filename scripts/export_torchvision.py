"""Export torchvision classifiers to ONNX for energy_report --onnx and prune_onnx.

    python scripts/export_torchvision.py OUT_DIR [--dynamo] [NAME ...]

NAME defaults to alexnet squeezenet1_0 resnet18 mobilenet_v2 (random weights:
weights=None needs no download; pass weights="DEFAULT" in your own script).
Without --dynamo the TorchScript exporter is used (batch norm folded into the
convolutions); with it, torch.export (batch norm kept as nodes).
"""

import sys

import torch
import torchvision


def main() -> None:
    args = sys.argv[1:]
    if not args:
        sys.exit(__doc__)
    out, rest = args[0], args[1:]
    dynamo = "--dynamo" in rest
    names = [a for a in rest if a != "--dynamo"] or [
        "alexnet",
        "squeezenet1_0",
        "resnet18",
        "mobilenet_v2",
    ]
    for name in names:
        model = getattr(torchvision.models, name)(weights=None).eval()
        path = f"{out}/{name}{'_dynamo' if dynamo else ''}.onnx"
        torch.onnx.export(
            model,
            (torch.randn(1, 3, 224, 224),),
            path,
            opset_version=17,
            dynamo=dynamo,
            external_data=False,
        )
        print("wrote", path)


if __name__ == "__main__":
    main()
