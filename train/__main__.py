"""``python -m train --data DIR --out artifacts/NAME``: see train/cli.py (or --help); exit codes: device/exitcodes.py."""

import sys

from device.exitcodes import run
from train.cli import main

sys.exit(run(main, None, "python -m train"))
