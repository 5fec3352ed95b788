"""``python -m device --bundle artifacts/NAME``: see device/cli.py (or --help); exit codes: device/exitcodes.py."""

import sys

from device.cli import main
from device.exitcodes import run

if __name__ == "__main__":
    sys.exit(run(main, None, "edgecam"))
