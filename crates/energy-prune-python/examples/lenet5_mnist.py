"""LeNet-5 trained in PyTorch on MNIST, compressed to 0.2 of its dense energy with
`energy_prune.torch.EnergyProjector` (pip install torch onnx; from the repository root):

    python crates/energy-prune-python/examples/lenet5_mnist.py [--data data/mnist] [--budget 0.2]

The recipe of the Rust job (`energy-prune lab lenet5`, without input masks): dense
training, then projected training (SGD with momentum, the budget tightened geometrically
from the dense energy to `--budget` over the first 60 % of the epochs, the weights
projected every `--every` steps, the loss mixed with a distillation term towards the
dense network's outputs), then fine-tuning on the support reached. Prints the progress
and a table of the results: test accuracy and exact energy of the dense and compressed
networks.
"""

import argparse
import copy
import gzip
import pathlib
import time

import numpy as np
import torch
from torch import nn

import energy_prune.torch as ept


def idx(path: pathlib.Path) -> np.ndarray:
    raw = gzip.open(path).read()
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * dims).reshape(shape)


def load(data: pathlib.Path, split: str):
    x = idx(data / f"{split}-images-idx3-ubyte.gz").astype(np.float32) / 255.0
    y = idx(data / f"{split}-labels-idx1-ubyte.gz").astype(np.int64)
    x = np.pad(x, ((0, 0), (2, 2), (2, 2)))  # 28 x 28 -> 32 x 32, LeNet-5's input
    x = (x - 0.1307) / 0.3081
    return torch.from_numpy(x[:, None].copy()), torch.from_numpy(y.copy())


class LeNet5(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(400, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


@torch.no_grad()
def accuracy(model, x, y) -> float:
    model.eval()
    hits = sum(int((model(x[i : i + 1000]).argmax(1) == y[i : i + 1000]).sum()) for i in range(0, len(x), 1000))
    model.train()
    return 100.0 * hits / len(x)


def epoch(model, opt, x, y, batch, gen, after_step=None, teacher=None, distill=0.0):
    loss_sum = 0.0
    order = torch.randperm(len(x), generator=gen)
    for i in range(0, len(x), batch):
        j = order[i : i + batch]
        opt.zero_grad()
        logits = model(x[j])
        loss = nn.functional.cross_entropy(logits, y[j])
        if teacher is not None and distill > 0:
            with torch.no_grad():
                target = torch.softmax(teacher(x[j]), 1)
            soft = nn.functional.cross_entropy(logits, target)
            loss = (1 - distill) * loss + distill * soft
        loss.backward()
        opt.step()
        if after_step is not None:
            after_step(i / len(x))
        loss_sum += float(loss.detach()) * len(j)
    return loss_sum / len(x)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=pathlib.Path, default=pathlib.Path("data/mnist"))
    ap.add_argument("--budget", type=float, default=0.2)
    ap.add_argument("--dense-epochs", type=int, default=12)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--finetune-epochs", type=int, default=4)
    ap.add_argument("--every", type=int, default=50, help="optimizer steps between projections")
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--distill", type=float, default=0.5, help="weight of the distillation term")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    xtr, ytr = load(args.data, "train")
    xte, yte = load(args.data, "t10k")
    model = LeNet5()
    start = time.time()

    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    # The dense network's learning rate decays along a cosine to a tenth.
    decay = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.dense_epochs, eta_min=args.lr / 10)
    for e in range(args.dense_epochs):
        loss = epoch(model, opt, xtr, ytr, 64, gen)
        decay.step()
        print(f"dense      {e + 1:2}/{args.dense_epochs}  loss {loss:.4f}  test {accuracy(model, xte, yte):6.2f} %", flush=True)
    dense_acc = accuracy(model, xte, yte)

    teacher = copy.deepcopy(model).eval()
    projector = ept.EnergyProjector(model, xte[:1], budget=1.0, every=args.every)
    dense_energy = projector.dense_energy()
    reach = max(1e-9, 0.6 * args.epochs)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    for e in range(args.epochs):

        def after_step(progress, e=e):
            # The budget falls geometrically from dense to the target by 60 % of the epochs.
            projector.set_budget(args.budget ** min(1.0, (e + progress) / reach))
            projector.step()

        loss = epoch(model, opt, xtr, ytr, 64, gen, after_step, teacher, args.distill)
        projector.set_budget(args.budget ** min(1.0, (e + 1) / reach))
        projector.project()
        ratio = projector.energy().total / dense_energy
        print(
            f"projected  {e + 1:2}/{args.epochs}  loss {loss:.4f}  test {accuracy(model, xte, yte):6.2f} %  "
            f"energy {ratio:.4f} of dense (budget {args.budget ** min(1.0, (e + 1) / reach):.4f})",
            flush=True,
        )
    projector.set_budget(args.budget)
    projector.freeze()
    opt = torch.optim.SGD(model.parameters(), lr=args.lr / 10, momentum=0.9)
    for e in range(args.finetune_epochs):
        loss = epoch(model, opt, xtr, ytr, 64, gen, lambda _p: projector.step(), teacher, args.distill)
        print(f"finetune   {e + 1:2}/{args.finetune_epochs}  loss {loss:.4f}  test {accuracy(model, xte, yte):6.2f} %", flush=True)

    report = ept.report(model, xte[:1])
    acc = accuracy(model, xte, yte)
    print()
    print(report)
    print()
    print("| network | test accuracy | energy / dense | nonzero weights |")
    print("|---|---|---|---|")
    print(f"| dense | {dense_acc:.2f} % | 1.0000 | {sum(p.numel() for p in projector.parameters)} |")
    print(f"| energy-constrained | {acc:.2f} % | {report.total / dense_energy:.4f} | {sum(int((p != 0).sum()) for p in projector.parameters)} |")
    print(f"\nbudget {args.budget} of the dense energy; whole run {time.time() - start:.0f} s")
    assert report.total <= args.budget * dense_energy


if __name__ == "__main__":
    main()
