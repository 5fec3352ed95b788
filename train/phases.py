"""How training runs and which epoch is exported.

Checkpoint choice (BestEpoch): an epoch is better when its validation accuracy is higher, or equal (within
half an image of the validation set) with a lower validation loss. Sets filmed as video saturate validation
accuracy early (near-identical neighbouring frames), and exporting the first epoch to touch 100% picks a
model that is still moving; among tied epochs the lower loss - usually a later epoch - is the settled one.
Early stopping uses the same rule, so a saturated accuracy with a falling loss keeps training.

Two phases (fit_phases) for the pretrained backbones: the head alone on the frozen backbone at
--learning-rate, then the top blocks (from --freeze on) with the head at --fine-tune-learning-rate. Both
follow the same warm-up + cosine schedule within their own epochs. --resume continues in the phase where it
stopped (the phase is kept in checkpoints/state.json).
"""

from __future__ import annotations

import dataclasses
import math


def learning_rate_schedule(options, train_images: int):
    """Linear warm-up from a tenth of --learning-rate over the first epoch (over the first quarter of the
    steps when there are fewer than four epochs), then cosine decay to zero at --epochs. Without the warm-up, Adam at full rate in the first steps can drive the ReLU network of the
    reference model into a state where it predicts uniform probabilities for several epochs; the decay
    settles the weights so the best epoch is near the last. The step count lives in the optimizer, so
    --resume continues the schedule where it stopped."""
    import keras

    steps_per_epoch = max(1, -(-train_images // options.batch_size))
    warmup = min(steps_per_epoch, max(1, options.epochs * steps_per_epoch // 4))
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=options.learning_rate / 10, decay_steps=max(1, options.epochs * steps_per_epoch - warmup),
        warmup_target=options.learning_rate, warmup_steps=warmup)


def better(accuracy: float, loss: float, best_accuracy: float, best_loss: float, tolerance: float) -> bool:
    if accuracy > best_accuracy + tolerance:
        return True
    return accuracy >= best_accuracy - tolerance and loss < best_loss


def best_epoch_callback(patience: int, state: dict, validation_images: int):
    """Mark every better epoch in STATE (see module doc) and stop after PATIENCE epochs without one. The best
    scores, the best epoch and the wait live in STATE, which the caller's epoch record (train/api.py save_epoch,
    the next callback) commits together with that epoch's model, so --resume continues the same comparison and
    checkpoints/best.keras is always the model of the epoch STATE names."""
    import keras

    tolerance = 0.5 / max(1, validation_images)

    class BestEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            accuracy, loss = logs.get("val_accuracy"), logs.get("val_loss")
            if accuracy is None:
                return
            loss = math.inf if loss is None or math.isnan(loss) else float(loss)
            if better(float(accuracy), loss, state.get("best_val_accuracy", -1.0),
                      state.get("best_val_loss", math.inf), tolerance):
                state.update(best_val_accuracy=float(accuracy), best_val_loss=loss, best_epoch=epoch + 1, wait=0)
            else:
                state["wait"] = state.get("wait", 0) + 1
                if state["wait"] >= patience:
                    self.model.stop_training = True

    return BestEpoch()


def compile_model(model, options, learning_rate: float, epochs: int, train_images: int):
    import keras

    schedule = learning_rate_schedule(dataclasses.replace(options, epochs=epochs, learning_rate=learning_rate),
                                      train_images)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])


def fit_phases(model, train_ds, val_ds, options, callbacks, state: dict, initial_epoch: int, verbose: int,
               train_images: int):
    """Phase 1 (head) for options.head_epochs, phase 2 (top blocks) to options.epochs; returns the model."""
    from train.backbones import set_trainable

    head_epochs = options.head_epochs
    if initial_epoch < head_epochs:
        if state.get("phase") != "head" or initial_epoch == 0:
            set_trainable(model, 0, head_only=True)
            compile_model(model, options, options.learning_rate, head_epochs, train_images)
        state["phase"] = "head"
        print(f"phase 1/2: the head on the frozen backbone, epochs {initial_epoch + 1}-{head_epochs}, "
              f"learning rate {options.learning_rate:g}", flush=True)
        model.fit(train_ds, validation_data=val_ds, epochs=head_epochs, initial_epoch=initial_epoch, shuffle=False,
                  callbacks=callbacks, verbose=verbose)
        initial_epoch = head_epochs
    if initial_epoch < options.epochs:
        if state.get("phase") != "fine-tune":
            set_trainable(model, options.freeze)
            compile_model(model, options, options.fine_tune_learning_rate, options.epochs - head_epochs, train_images)
            state.update(phase="fine-tune", wait=0)
        print(f"phase 2/2: fine-tuning blocks {options.freeze} and up with the head, epochs {initial_epoch + 1}-"
              f"{options.epochs}, learning rate {options.fine_tune_learning_rate:g}", flush=True)
        model.fit(train_ds, validation_data=val_ds, epochs=options.epochs, initial_epoch=initial_epoch,
                  shuffle=False, callbacks=callbacks, verbose=verbose)
    return model
