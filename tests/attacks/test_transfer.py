"""Black-box transfer from a substitute trained by the same training code."""

from __future__ import annotations

import pytest
import torch

from robustloss.attacks import create_attack
from robustloss.errors import CheckpointError


@pytest.mark.parametrize("method", ["pgd", "mim"])
def test_transfer_lowers_target_accuracy_without_querying_it(trained_lenet, mnist5k, cnn3_substitute, method):
    x, y = mnist5k.test.batch(slice(0, 200))
    calls = []
    handle = trained_lenet.register_forward_hook(lambda *a: calls.append(1))
    try:
        attack = create_attack("transfer", eps=0.3, substitute=str(cnn3_substitute), method=method)
        result = attack(trained_lenet, x, y, generator=torch.Generator().manual_seed(0))
    finally:
        handle.remove()
    assert len(calls) == 1  # only the final judgement touches the target
    assert (result.queries == 0).all()
    with torch.no_grad():
        clean = (trained_lenet(x).argmax(1) == y).float().mean().item()
    assert (result.pred == y).float().mean().item() < clean - 0.2
    assert (result.linf <= 0.3 + 1e-5).all()
    params = attack.hyperparameters()
    assert params["substitute"] == str(cnn3_substitute) and params["method"] == method and params["method_params"]["steps"] == 40


def test_missing_substitute_says_how_to_train_one(trained_lenet, tmp_path):
    attack = create_attack("transfer", eps=0.1, substitute=str(tmp_path / "nope"))
    with pytest.raises(CheckpointError, match="robustloss train .*--model cnn3"):
        attack(trained_lenet, torch.rand(2, 1, 28, 28), torch.tensor([0, 1]))


def test_the_memo_returns_what_a_fresh_call_would_and_moves_the_generator_alike(trained_lenet, mnist5k,
                                                                                 cnn3_substitute):
    from robustloss.attacks.transfer import TransferAttack

    TransferAttack.memo.clear()
    x, y = mnist5k.test.batch(slice(0, 64))
    inner = {"steps": 5, "step_size": 0.05}
    attack = create_attack("transfer", eps=0.2, substitute=str(cnn3_substitute), method_params=inner)
    first_gen, second_gen = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    first = attack.craft(trained_lenet, x, y, generator=first_gen)
    assert (TransferAttack.memo.hits, TransferAttack.memo.misses) == (0, 1)
    # another target model, a new attack object: the substitute's examples are the same images
    other_target = create_attack("transfer", eps=0.2, substitute=str(cnn3_substitute), method_params=inner)
    again = other_target.craft(torch.nn.Sequential(trained_lenet), x, y, generator=second_gen)
    assert TransferAttack.memo.hits == 1
    assert torch.equal(first, again)
    assert torch.equal(first_gen.get_state(), second_gen.get_state())
    # a different random stream, batch or setting is crafted anew
    attack.craft(trained_lenet, x, y, generator=torch.Generator().manual_seed(4))
    attack.craft(trained_lenet, x[:32], y[:32], generator=torch.Generator().manual_seed(3))
    smaller = create_attack("transfer", eps=0.1, substitute=str(cnn3_substitute), method_params=inner)
    smaller.craft(trained_lenet, x, y, generator=torch.Generator().manual_seed(3))
    assert (TransferAttack.memo.hits, TransferAttack.memo.misses) == (1, 4)
    TransferAttack.memo.clear()
    fresh = attack.craft(trained_lenet, x, y, generator=torch.Generator().manual_seed(3))
    assert torch.equal(fresh, first)
