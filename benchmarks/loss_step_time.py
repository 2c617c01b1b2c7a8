"""Training-step time of every registered loss relative to cross-entropy, in one run.

A step is forward + loss + backward + optimizer step on the same model architecture, batch and
device. Inputs are seeded random images of the dataset's shape (timing needs no real pixels,
so the benchmark runs without the dataset on disk). Losses are timed in interleaved rounds (every round times every loss once) and the
median round is reported, so slow drift of the machine affects all losses alike.

    .venv/bin/python benchmarks/loss_step_time.py [--model lenet5] [--batch-size 256] [--rounds 9]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from robustloss.data import DATASETS
from robustloss.device import resolve_device
from robustloss.losses import LOSSES, create_loss
from robustloss.models import create_model


def make_step(loss_name: str, model_name: str, shape, num_classes: int, device):
    torch.manual_seed(0)
    model = create_model(model_name, num_classes=num_classes, in_channels=shape[0], input_size=shape[1]).to(device)
    loss = create_loss(loss_name).to(device)
    head = loss.make_head(model.feature_dim, model.num_classes)
    if head is not None:
        model.replace_head(head.to(device))
    loss.bind(model)
    optimizer = torch.optim.Adam([*model.parameters(), *loss.parameters()], lr=1e-3)
    model.train()

    def step(x, y):
        logits, features = model.forward_with_features(x)
        value = loss(logits, y, features)
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
        return value

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="lenet5")
    parser.add_argument("--dataset", default="mnist-5k")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10, help="steps per timing")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    device = resolve_device(args.device)
    spec = DATASETS.get(args.dataset)
    generator = torch.Generator().manual_seed(0)
    x = torch.rand((args.batch_size, *spec.image_shape), generator=generator).to(device)
    y = torch.randint(0, spec.num_classes, (args.batch_size,), generator=generator).to(device)
    names = LOSSES.names()
    steps = {n: make_step(n, args.model, spec.image_shape, spec.num_classes, device) for n in names}
    for step in steps.values():  # warm-up (allocator, kernels)
        for _ in range(3):
            step(x, y)
    times: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(args.rounds):
        for name in names:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(args.steps):
                steps[name](x, y)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append((time.perf_counter() - start) / args.steps)

    base = statistics.median(times["ce"])
    print(f"model {args.model}, batch {args.batch_size}, device {device}, torch {torch.__version__}, "
          f"{args.rounds} rounds x {args.steps} steps (median)")
    print(f"{'loss':<16} {'ms/step':>8} {'vs CE':>6}")
    for name in names:
        median = statistics.median(times[name])
        print(f"{name:<16} {1000 * median:8.2f} {median / base:6.3f}x")


if __name__ == "__main__":
    main()
