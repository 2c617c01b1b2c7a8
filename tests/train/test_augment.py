import torch

from robustloss.train.augment import augmentation_for, random_crop, random_crop_flip


def test_crop_is_a_shifted_window_of_the_zero_padded_image():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    g = torch.Generator().manual_seed(0)
    out = random_crop_flip(x, g, padding=2, flip=False)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for n in range(2):  # each output equals some 8x8 window of its padded input, same for all channels
        windows = [(i, j) for i in range(5) for j in range(5) if torch.equal(padded[n, :, i:i + 8, j:j + 8], out[n])]
        assert len(windows) >= 1


def test_flip_mirrors_about_half_the_batch():
    x = torch.rand(400, 1, 6, 6)
    out = random_crop_flip(x, torch.Generator().manual_seed(1), padding=0, flip=True)
    flipped = [torch.equal(out[i], x[i].flip(2)) for i in range(400)]
    assert 150 < sum(flipped) < 250


def test_augmentation_choice_per_dataset():
    assert augmentation_for("auto", color=False) is None
    assert augmentation_for("auto", color=True) is random_crop_flip
    assert augmentation_for("crop", color=True) is random_crop
    assert augmentation_for("none", color=True) is None
