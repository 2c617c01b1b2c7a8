"""A bounded in-memory memo of crafted adversarial images, for attacks whose output does not
depend on the model under evaluation (transfer attacks: the substitute does all the work).

The key is everything the crafting reads: the attack's settings, the images, labels and goals,
any per-sample budget, and the random generator's state before the call. Equal keys therefore
give bit-identical images, so a hit returns what a fresh call would have returned; the
generator is then moved to the state the original call left it in, so nothing downstream can
tell the difference. The oldest entries are dropped beyond ``max_bytes``.

Limit: it lives in memory, for one process. An experiment evaluates its targets one after another,
each with every (attack, eps), so a later target finds the examples it needs only if all the
earlier target's examples fit in ``max_bytes``: the demo's 6 x 1,000 MNIST batches (19 MB) do,
but MMC Fig. 4 at paper scale (12 attacks x 2 budgets x 10,000 CIFAR-10 images, 2.9 GB) does not,
and there every target crafts again. A disk store keyed by the substitute would lift that.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Callable

import torch
from torch import Tensor


def _digest(*parts: object) -> str:
    h = hashlib.blake2b(digest_size=20)
    for part in parts:
        if isinstance(part, Tensor):
            t = part.detach().cpu().contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
        else:
            h.update(repr(part).encode())
        h.update(b"|")
    return h.hexdigest()


class CraftedMemo:
    def __init__(self, max_bytes: int = 512 * 2**20):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, tuple[Tensor, Tensor | None]] = OrderedDict()
        self._bytes = 0
        self.hits = self.misses = 0

    def clear(self) -> None:
        self._entries.clear()
        self._bytes, self.hits, self.misses = 0, 0, 0

    def get_or_craft(self, settings: object, tensors: tuple[Tensor | None, ...],
                     generator: torch.Generator | None, craft: Callable[[], Tensor]) -> Tensor:
        """``craft()``'s images, from the memo when the same settings, tensors and generator state
        were crafted before."""
        state = generator.get_state() if generator is not None else None
        key = _digest(settings, *tensors, state)
        if key in self._entries:
            self.hits += 1
            self._entries.move_to_end(key)
            images, state_after = self._entries[key]
            if generator is not None and state_after is not None:
                generator.set_state(state_after)
            return images.to(tensors[0].device if tensors and tensors[0] is not None else images.device)
        self.misses += 1
        images = craft()
        state_after = generator.get_state() if generator is not None else None
        self._store(key, images.detach(), state_after)
        return images

    def _store(self, key: str, images: Tensor, state_after: Tensor | None) -> None:
        size = images.numel() * images.element_size()
        if size > self.max_bytes:
            return  # larger than the whole memo: not worth evicting everything for
        self._entries[key] = (images, state_after)
        self._bytes += size
        while self._bytes > self.max_bytes:
            _, (old, _) = self._entries.popitem(last=False)
            self._bytes -= old.numel() * old.element_size()
