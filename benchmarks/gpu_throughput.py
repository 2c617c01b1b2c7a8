"""Paper-scale throughput on one device: VGG-13 training images/s on CIFAR-sized data, PGD-40
images/s, and the FLOP/s achieved against the device's peak, in one run.

Each configuration (fp32; bf16 autocast; bf16 + channels_last) times `--steps` training steps
of the robustloss training step (``train_one_epoch`` on device-resident random data, crop+flip
on the device) after a warm-up, and PGD-40 (``robustloss.attacks`` PGD, 40 steps, no early
stop) on a batch. FLOPs per step are counted with ``torch.utils.flop_counter`` (matmuls and
convolutions, forward and backward), so achieved FLOP/s = counted FLOPs / measured time.
Peak numbers are the vendors' dense tensor-core figures for the GPUs this project is lent
(H100 SXM / H200: 989 TFLOP/s bf16, 494 TFLOP/s tf32); on other devices the peak is unknown
and only the achieved rate is printed.

    .venv/bin/python benchmarks/gpu_throughput.py [--batch 512] [--steps 20] [--device auto]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from robustloss.attacks import create_attack
from robustloss.data.split import ImageSplit
from robustloss.device import resolve_device
from robustloss.losses import create_loss
from robustloss.models import create_model
from robustloss.train.augment import random_crop_flip
from robustloss.train.loop import train_one_epoch

# Dense (no sparsity) peak FLOP/s by device name fragment: (bf16, tf32/fp32 tensor cores).
PEAKS = {"H100": (989e12, 494e12), "H200": (989e12, 494e12), "A100": (312e12, 156e12)}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_for(device: torch.device, precision: str) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for fragment, (bf16, tf32) in PEAKS.items():
        if fragment in name:
            return bf16 if precision == "bf16" else tf32
    return None


def step_flops(model, batch: int, device: torch.device) -> int:
    """FLOPs of one training step (forward + backward) at this batch size."""
    x = torch.rand(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def time_training(model, split: ImageSplit, batch: int, device, precision: str, channels_last: bool) -> float:
    """Seconds per image over one pass of ``split`` (already warm)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    generator = torch.Generator().manual_seed(0)
    run = lambda: train_one_epoch(model, create_loss("ce").to(device), split, optimizer, batch_size=batch,  # noqa: E731
                                  generator=generator, augment=random_crop_flip, device=device, progress=False,
                                  precision=precision, channels_last=channels_last)
    run()  # warm-up: kernels chosen, memory allocated
    sync(device)
    start = time.perf_counter()
    run()
    sync(device)
    return (time.perf_counter() - start) / len(split)


def time_pgd(model, batch: int, device, precision: str) -> float:
    x = torch.rand(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    attack = create_attack("pgd", eps=8 / 255, steps=40, step_size=2 / 255, early_stop=False)
    attack(model, x, y, precision=precision)  # warm-up
    sync(device)
    start = time.perf_counter()
    attack(model, x, y, precision=precision)
    sync(device)
    return (time.perf_counter() - start) / batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20, help="training steps timed per configuration")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # what "fp32" means on tensor cores
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    n = args.batch * args.steps
    images = (torch.rand(n, 3, 32, 32) * 255).to(torch.uint8)
    split = ImageSplit(images, torch.randint(0, 10, (n,))).to(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"VGG-13 on CIFAR-sized data, batch {args.batch}, {args.steps} steps per configuration, device {name}")
    base = None
    for precision, channels_last in (("fp32", False), ("bf16", False), ("bf16", True)):
        model = create_model("vgg13", num_classes=10, in_channels=3, input_size=32).to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        flops = step_flops(model, args.batch, device) / args.batch  # per image
        seconds = time_training(model, split, args.batch, device, precision, channels_last)
        base = base or seconds
        peak = peak_for(device, precision)
        achieved = flops / seconds
        share = f" = {100 * achieved / peak:.1f}% of the {peak / 1e12:.0f} TFLOP/s peak" if peak else ""
        label = precision + (" + channels_last" if channels_last else "")
        print(f"  train {label:<22} {1 / seconds:9.0f} images/s  ({base / seconds:.2f}x fp32)  "
              f"{achieved / 1e12:7.3f} TFLOP/s achieved{share}")
        pgd = time_pgd(model.eval(), args.batch, device, precision)
        # A PGD step is a forward pass and a backward pass to the input only (no weight gradients):
        # about 2/3 of a training step's FLOPs; the final verdict is one forward pass (1/3).
        pgd_flops = (40 * 2 / 3 + 1 / 3) * flops
        print(f"  PGD-40 {label:<21} {1 / pgd:9.0f} images/s  {pgd_flops / pgd / 1e12:7.3f} TFLOP/s achieved")


if __name__ == "__main__":
    main()
