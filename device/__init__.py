"""edgecam device side: runs a TFLite classifier on a Raspberry Pi or Coral board, offline.

This package must stay lean: it imports numpy and one TFLite interpreter (in device/runtime.py),
never TensorFlow, Keras, train/ or convert/. Host tools import *from* here (the manifest schema),
never the other way round.
"""

__version__ = "0.1.0"
