"""Teaching on the device: capture, dataset, numpy head, revisions, the Teach view."""
