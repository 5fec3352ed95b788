"""Keep TensorFlow's own log lines off the terminal unless they matter.

TensorFlow's C++ side writes notices straight to file descriptor 2 ("E0000 ... NodeDef mentions attribute
use_unbounded_threadpool ...", oneDNN and CPU-feature notices, absl's "All log messages before
absl::InitializeLog()"): a user reads them as failures. ``python -m train`` therefore

- sets TF_CPP_MIN_LOG_LEVEL=3 and absl's Python verbosity before TensorFlow is imported (unless the user set
  them), and
- while training, points file descriptor 2 at a temporary file and Python's own sys.stderr at a copy of the
  real one, so the kit's lines (warnings, errors, progress) still show and TensorFlow's do not; when training
  fails, the captured lines are printed after the error, so nothing needed for a bug report is lost.

``--verbose`` turns both off.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile

CAPTURED_TAIL = 60  # lines of TensorFlow's log shown after a failure


def before_tensorflow(verbose: bool) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbose else "3")
    if not verbose:
        os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
        try:
            from absl import logging as absl_logging

            absl_logging.set_verbosity(absl_logging.ERROR)
        except ImportError:  # absl comes with TensorFlow; without it there is nothing to quieten
            pass


@contextlib.contextmanager
def tensorflow_log(enabled: bool = True):
    """Capture what is written to file descriptor 2 (TensorFlow's C++ log) in the block; Python's sys.stderr
    keeps writing to the terminal. On an exception, the captured lines follow on stderr."""
    if not enabled:
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (embedded, closed): nothing to separate
        yield
        return
    capture = tempfile.TemporaryFile(mode="w+b")
    original_stderr = sys.stderr
    sys.stderr = os.fdopen(os.dup(saved), "w", buffering=1, encoding="utf-8", errors="replace")
    handlers = [h for h in logging.root.handlers
                if isinstance(h, logging.StreamHandler) and h.stream is original_stderr]
    for handler in handlers:  # the kit's log lines keep going to the terminal
        handler.setStream(sys.stderr)
    os.dup2(capture.fileno(), 2)
    failed = False
    try:
        yield
    except (ValueError, KeyboardInterrupt):  # bad input or Ctrl+C: the kit's own message says it all
        raise
    except BaseException:
        failed = True
        raise
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        kit_stderr, sys.stderr = sys.stderr, original_stderr
        for handler in handlers:
            handler.setStream(original_stderr)
        kit_stderr.close()
        if failed:
            capture.seek(0)
            lines = capture.read().decode("utf-8", "replace").splitlines()[-CAPTURED_TAIL:]
            if lines:
                print("TensorFlow's log before the failure (last lines; --verbose shows it live):", file=sys.stderr)
                print("\n".join(lines), file=sys.stderr)
        capture.close()
