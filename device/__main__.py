"""``python -m device --bundle artifacts/NAME``: see device/cli.py (or --help)."""

import sys

from device.cli import main

if __name__ == "__main__":
    sys.exit(main())
