"""Training throughput of the fast single-device path against a DataLoader baseline, in one run.

Every method trains the same model from the same initial weights with the same step (forward,
CE loss, backward, SGD step, loss and accuracy read back), and differs only in how batches
reach the model:

* ``resident fp32``   - our path (``train_one_epoch``): the split is one tensor on the device,
  a batch is one gather by a shuffled index, converted and augmented there as a whole batch;
* ``DataLoader w=N``  - ``torch.utils.data.DataLoader`` over a ``TensorDataset`` of the same
  uint8 images with ``shuffle=True`` and N worker processes (per-sample indexing and collation,
  workers started every epoch, pinned memory and a non-blocking copy on CUDA), followed by the
  same conversion and batch augmentation on the device, so only the data path differs;
* ``resident bf16``   - our path with ``precision="bf16"`` (autocast forward, float32 loss).

Workloads: LeNet-5 on mnist-5k (the real 5,000 training digits, no augmentation, as in the
papers) and VGG-13 on random 3x32x32 uint8 images with crop+flip augmentation (CIFAR-sized;
few steps, so the run stays short on a CPU). One epoch per timing; timings are interleaved
over rounds after a warm-up epoch, the median is reported, and CUDA is synchronised before
and after each timing.

    .venv/bin/python benchmarks/train_throughput.py [--device auto] [--rounds 3] [--vgg-steps 4]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from typing import Callable

import torch
from torch.utils.data import DataLoader, TensorDataset

from robustloss.data import load_dataset
from robustloss.data.split import ImageSplit, to_float
from robustloss.device import resolve_device
from robustloss.losses import create_loss
from robustloss.models import create_model
from robustloss.train.augment import random_crop_flip
from robustloss.train.loop import train_one_epoch


def make_model(name: str, channels: int, size: int, device: torch.device):
    torch.manual_seed(0)  # every method starts from the same weights
    model = create_model(name, num_classes=10, in_channels=channels, input_size=size).to(device)
    return model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)


def resident_epoch(name: str, split: ImageSplit, batch_size: int, augment, device: torch.device,
                   precision: str) -> Callable[[], None]:
    """Our path: the split on the device, train_one_epoch as the trainer calls it."""
    model, optimizer = make_model(name, split.images.shape[1], split.images.shape[2], device)
    loss_fn = create_loss("ce").to(device)
    resident = split.to(device)
    generator = torch.Generator().manual_seed(0)

    def epoch() -> None:
        train_one_epoch(model, loss_fn, resident, optimizer, batch_size=batch_size, generator=generator,
                        augment=augment, device=device, progress=False, precision=precision)
    return epoch


def dataloader_epoch(name: str, split: ImageSplit, batch_size: int, augment, device: torch.device,
                     workers: int) -> Callable[[], None]:
    """The usual baseline: DataLoader(TensorDataset, shuffle=True), then the same step."""
    model, optimizer = make_model(name, split.images.shape[1], split.images.shape[2], device)
    loss_fn = create_loss("ce").to(device)
    loader = DataLoader(TensorDataset(split.images, split.labels), batch_size=batch_size, shuffle=True,
                        num_workers=workers, pin_memory=device.type == "cuda",
                        generator=torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(0)

    def epoch() -> None:
        model.train()
        correct = 0
        for images, labels in loader:
            x, y = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            x = to_float(x)
            if augment is not None:
                x = augment(x, generator)
            logits, features = model.forward_with_features(x)
            loss = loss_fn(logits, y, features)
            value = loss.item()  # train_one_epoch reads every loss back (NaN check, progress) too
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {value}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            correct += int((logits.argmax(1) == y).sum())
    return epoch


def timed(fn: Callable[[], None], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def workloads(vgg_steps: int, vgg_batch: int) -> list[tuple[str, str, ImageSplit, int, object]]:
    """(label, model, training split, batch size, augmentation)."""
    mnist = load_dataset("mnist-5k").train
    g = torch.Generator().manual_seed(0)
    n = vgg_steps * vgg_batch
    noise = ImageSplit(torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8),
                       torch.randint(0, 10, (n,), generator=g))
    return [("lenet5 mnist-5k", "lenet5", mnist, 256, None),
            ("vgg13 rand-3x32x32", "vgg13", noise, vgg_batch, random_crop_flip)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--rounds", type=int, default=3, help="timed epochs per method (after one warm-up)")
    parser.add_argument("--vgg-steps", type=int, default=4, help="steps per VGG-13 epoch")
    parser.add_argument("--vgg-batch", type=int, default=128)
    args = parser.parse_args()
    device = resolve_device(args.device)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
          f"median of {args.rounds} interleaved epochs after a warm-up")
    print(f"{'workload':<20} {'method':<16} {'images':>6} {'s/epoch':>8} {'img/s':>9} {'vs resident fp32':>16}")
    for label, name, split, batch_size, augment in workloads(args.vgg_steps, args.vgg_batch):
        methods = {
            "resident fp32": resident_epoch(name, split, batch_size, augment, device, "fp32"),
            "DataLoader w=0": dataloader_epoch(name, split, batch_size, augment, device, 0),
            "DataLoader w=2": dataloader_epoch(name, split, batch_size, augment, device, 2),
            "resident bf16": resident_epoch(name, split, batch_size, augment, device, "bf16"),
        }
        times: dict[str, list[float]] = {k: [] for k in methods}
        order = random.Random(0)
        for round_index in range(args.rounds + 1):  # round 0 warms up (allocator, kernels, autocast caches)
            names = list(methods)
            order.shuffle(names)  # no method always runs first or right after another
            for method in names:
                seconds = timed(methods[method], device)
                if round_index:
                    times[method].append(seconds)
        rate = {k: len(split) / statistics.median(v) for k, v in times.items()}
        for method in methods:
            print(f"{label:<20} {method:<16} {len(split):>6} {len(split) / rate[method]:8.3f} {rate[method]:9.0f} "
                  f"{rate[method] / rate['resident fp32']:16.2f}")
        print(f"{label:<20} resident fp32 / DataLoader w=0 = {rate['resident fp32'] / rate['DataLoader w=0']:.2f}x, "
              f"/ DataLoader w=2 = {rate['resident fp32'] / rate['DataLoader w=2']:.2f}x, "
              f"bf16 / fp32 = {rate['resident bf16'] / rate['resident fp32']:.2f}x")


if __name__ == "__main__":
    main()
