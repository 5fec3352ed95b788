"""edgecam converter: SavedModel -> TFLite (float32, float16, dynamic-range, int8) with measured parity.

``python -m convert artifacts/NAME`` writes ``tflite/model_*.tflite`` into the bundle, evaluates every
model through the device's own loader and preprocessing (device.runtime, device.preprocess), writes
``parity.json`` / ``parity.md`` and records each model in the manifest. It exits 1 when a parity
threshold is broken (a CI gate) and 2 for bad input. The library entry point is
:func:`convert.api.convert_bundle`.
"""
