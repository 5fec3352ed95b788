"""edgecam benchmark: python -m bench --bundle artifacts/rps (see bench/__main__.py)."""
