"""The daemon's core knowledge of classifier heads: the numpy head (:mod:`device.heads.head`) and the store of
taught head revisions kept per model in the state folder (:mod:`device.heads.store`). Every start needs them,
so they live here, not in the optional teach package (device/teach/ writes revisions; the daemon reads them)."""
