"""Test helper, not a test: one training process for tests/test_multiworker.py, run as
`python tests/multiworker_worker.py DATA OUT EPOCHS STRATEGY [--resume]` (TF_CONFIG from the environment).

It calls the production train_bundle() unchanged, with two test-only additions that live here, not in train/:
- a callback that saves the final weights to EDGECAM_TEST_WEIGHTS (.npz), so the test can compare workers;
  and, with EDGECAM_TEST_KILL_AFTER_EPOCH=N, kills this process with SIGKILL once epoch N is checkpointed
  (a worker crashing mid-run);
- dropout off (build_model(dropout=0)): with no random layer left, synchronous data-parallel SGD on the same
  global batches is the same computation as one machine's, so the test can ask for equal predictions."""

from __future__ import annotations

import functools
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

import train.api  # noqa: E402
import train.model  # noqa: E402


def with_test_callbacks(production_callbacks):
    import keras

    class TestOnly(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if int(os.environ.get("EDGECAM_TEST_KILL_AFTER_EPOCH", "0")) == epoch + 1:
                os.kill(os.getpid(), signal.SIGKILL)

        def on_train_end(self, logs=None):
            np.savez(os.environ["EDGECAM_TEST_WEIGHTS"], *self.model.get_weights())

    @functools.wraps(production_callbacks)
    def callbacks(*args, **kwargs):
        return [*production_callbacks(*args, **kwargs), TestOnly()]  # after EpochState: the epoch is saved
    return callbacks


def main() -> None:
    data, out, epochs, strategy = sys.argv[1:5]
    train.api._callbacks = with_test_callbacks(train.api._callbacks)
    train.model.build_model = functools.partial(train.model.build_model, dropout=0.0)
    train.api.train_bundle(data, out, model="small", image_size=24, epochs=int(epochs), batch_size=16,
                           strategy=strategy, augment=False, seed=0, verbose=2, resume="--resume" in sys.argv)


if __name__ == "__main__":
    main()
