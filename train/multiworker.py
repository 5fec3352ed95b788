"""Synchronous data-parallel training across machines (tf.distribute.MultiWorkerMirroredStrategy).

Keras 3's model.fit cannot run under MultiWorkerMirroredStrategy (keras-team/keras#20585): its symbolic
build reduces a whole (images, labels) batch with strategy.reduce and its step reduces scalar metrics along
axis 0, and the collective strategy accepts neither, so every worker stops at the first step with
"Attempt to convert a value (PerReplica:{...}) ... to a Tensor". This loop does what fit does for the model
train_bundle builds, with the strategy's own primitives: one optimizer step per global batch, the loss summed
over the replicas' examples and divided by the global batch's size (so the gradients equal a single machine's
on the same batch), accuracy counted over all workers, and the same Keras callbacks (CSV log, checkpoints,
early stopping, the epoch state that --resume reads)."""

from __future__ import annotations

import time


def fit_multi_worker(model, strategy, train_ds, val_ds, *, epochs: int, initial_epoch: int, callbacks,
                     verbose: int) -> None:
    """Train the compiled MODEL (built under STRATEGY's scope) from INITIAL_EPOCH to EPOCHS. Every worker
    runs this with the same arguments; each sees its share of every global batch."""
    import keras
    import tensorflow as tf

    check_workers_agree(strategy, initial_epoch)
    options = tf.data.Options()  # the data are file paths in memory: shard elements, not files
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    train_batches = strategy.experimental_distribute_dataset(train_ds.with_options(options))
    val_batches = strategy.experimental_distribute_dataset(val_ds.with_options(options))

    def replica_step(images, labels, training):
        context = tf.distribute.get_replica_context()
        global_count = context.all_reduce("SUM", tf.cast(tf.shape(labels)[0], tf.float32))
        with tf.GradientTape() as tape:
            probabilities = model(images, training=training)
            loss_sum = tf.reduce_sum(keras.losses.sparse_categorical_crossentropy(labels, probabilities))
            loss = tf.math.divide_no_nan(loss_sum, global_count)
        if training:
            variables = model.trainable_variables
            model.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        predicted = tf.argmax(probabilities, axis=1, output_type=tf.int32)
        correct = tf.reduce_sum(tf.cast(tf.equal(predicted, tf.cast(labels, tf.int32)), tf.float32))
        return loss_sum, correct, tf.cast(tf.shape(labels)[0], tf.float32)

    def make_step(training: bool):
        @tf.function
        def step(batch):
            images, labels = batch
            sums = strategy.run(replica_step, args=(images, labels, training))
            return [strategy.reduce("SUM", value, axis=None) for value in sums]
        return step

    train_step, val_step = make_step(True), make_step(False)

    def run_epoch(step, batches) -> dict:
        loss_sum = correct = count = 0.0
        for batch in batches:
            batch_loss, batch_correct, batch_count = (float(value) for value in step(batch))
            loss_sum, correct, count = loss_sum + batch_loss, correct + batch_correct, count + batch_count
        return {"loss": loss_sum / count, "accuracy": correct / count} if count else {}

    callback_list = keras.callbacks.CallbackList(callbacks, model=model)
    model.stop_training = False
    callback_list.on_train_begin()
    for epoch in range(initial_epoch, epochs):
        started = time.monotonic()
        callback_list.on_epoch_begin(epoch)
        logs = run_epoch(train_step, train_batches)
        logs.update({f"val_{name}": value for name, value in run_epoch(val_step, val_batches).items()})
        callback_list.on_epoch_end(epoch, logs)
        if verbose:
            print(f"Epoch {epoch + 1}/{epochs} - {time.monotonic() - started:.0f}s - "
                  + " - ".join(f"{name}: {value:.4f}" for name, value in logs.items()), flush=True)
        if model.stop_training:
            break
    callback_list.on_train_end()


def check_workers_agree(strategy, epochs_done: int) -> None:
    """--resume: every worker must continue from the same epoch, or the collectives would pair different
    steps. Equal values are the only ones whose sum squared equals count times the sum of squares."""
    import tensorflow as tf

    def replica_fn():
        context = tf.distribute.get_replica_context()
        value = tf.constant(float(epochs_done))
        return context.all_reduce("SUM", tf.stack([value, value * value, 1.0]))

    total, squares, count = (float(v) for v in strategy.experimental_local_results(
        tf.function(lambda: strategy.run(replica_fn))())[0])
    if abs(total * total - count * squares) > 1e-6:
        raise ValueError(
            f"the workers would resume from different epochs (this one after epoch {epochs_done}, the "
            f"cluster's mean is {total / count:.2f}): a worker was stopped between two checkpoints. Copy the "
            "chief's OUT/checkpoints folder to every worker's --out, then start every worker again with --resume."
        )
