"""The one exception the converter raises for bad input (exit code 2). Its message names the path and the fix."""


class ConvertError(ValueError):
    """Bad input: a missing bundle or SavedModel, an empty calibration folder, an unknown format ..."""
