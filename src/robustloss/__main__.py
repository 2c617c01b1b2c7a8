"""``python -m robustloss ...`` (also what ``torchrun -m robustloss ...`` runs on every rank)."""

import sys

from robustloss.cli import main

sys.exit(main())
