"""Small ONNX files exported by PyTorch, with onnxruntime's outputs, for tests/onnx_pytorch.rs.

    python scripts/make_onnx_fixtures.py tests/data/onnx

Needs torch, onnx and onnxruntime. Each model is exported twice (TorchScript
exporter, and torch.export with --dynamo naming `_dynamo`), in eval mode with
non-trivial batch-norm statistics; `NAME.json` holds a fixed input and
onnxruntime's output for both files. `external_lenet5.onnx` is
`lenet5_dynamo.onnx` re-saved by ONNX's own writer with every tensor of 1 KiB
and more in `external_lenet5.onnx.data` (tests/external_data.rs).
"""

import json
import sys

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn


class LeNet5(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(400, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


class Block(nn.Module):
    """Inverted residual: 1x1 expand, 3x3 depthwise, 1x1 project, with ReLU6."""

    def __init__(self, c, t):
        super().__init__()
        h = c * t
        self.body = nn.Sequential(
            nn.Conv2d(c, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU6(),
            nn.Conv2d(h, h, 3, padding=1, groups=h, bias=False), nn.BatchNorm2d(h), nn.ReLU6(),
            nn.Conv2d(h, c, 1, bias=False), nn.BatchNorm2d(c),
        )

    def forward(self, x):
        return x + self.body(x)


class TinyNet(nn.Module):
    """Stem, a fire-style concat, a residual basic block with a strided 1x1
    shortcut, an inverted residual block, ceil-mode and average pools."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.pool = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.left = nn.Conv2d(8, 6, 1)
        self.right = nn.Conv2d(8, 6, 3, padding=1)
        self.conv1 = nn.Conv2d(12, 16, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.down = nn.Sequential(nn.Conv2d(12, 16, 1, stride=2, bias=False), nn.BatchNorm2d(16))
        self.inverted = Block(16, 4)
        self.avg = nn.AvgPool2d(2, 2)
        self.fc = nn.Linear(16 * 2 * 2, 7)

    def forward(self, x):
        x = self.pool(self.stem(x))
        x = torch.relu(torch.cat([self.left(x), self.right(x)], 1))
        y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        x = torch.relu(y + self.down(x))
        x = self.avg(self.inverted(x))
        return self.fc(torch.flatten(x, 1))


def randomize_bn(model):
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)


def main():
    out = sys.argv[1]
    torch.manual_seed(0)
    for name, model, shape in [("lenet5", LeNet5(), (1, 32, 32)), ("tinynet", TinyNet(), (3, 15, 15))]:
        randomize_bn(model)
        model.eval()
        x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(1))
        record = {"input_shape": list(shape), "batch": 2, "input": x.flatten().tolist(), "outputs": {}}
        for dynamo in (False, True):
            path = f"{out}/{name}{'_dynamo' if dynamo else ''}.onnx"
            torch.onnx.export(model, (x,), path, opset_version=17, dynamo=dynamo, external_data=False)
            sess = ort.InferenceSession(path)
            y = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
            record["outputs"][path.split("/")[-1]] = np.asarray(y).flatten().tolist()
            print("wrote", path)
        with open(f"{out}/{name}.json", "w") as f:
            json.dump(record, f)
    onnx.save_model(
        onnx.load(f"{out}/lenet5_dynamo.onnx"),
        f"{out}/external_lenet5.onnx",
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="external_lenet5.onnx.data",
        size_threshold=1024,
    )
    print("wrote", f"{out}/external_lenet5.onnx", "and its external data")


if __name__ == "__main__":
    main()
