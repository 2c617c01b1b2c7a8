"""``python -m robustloss ...`` (also what ``torchrun -m robustloss ...`` runs on every rank)."""

from robustloss.launch import run

run()
