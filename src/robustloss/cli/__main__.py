"""``python -m robustloss.cli ...``, the same as ``robustloss ...``."""

import sys

from robustloss.cli.main import main

sys.exit(main())
