"""python -m convert artifacts/NAME  (see convert/cli.py, or --help; exit codes: device/exitcodes.py)."""

import sys

from convert.cli import main
from device.exitcodes import run

sys.exit(run(main, None, "python -m convert"))
