"""The daemon's local HTTP server (standard library only), one concern a module.

server.py (connections, limits), handler.py (one request), guard.py (Host, token, back-off, cookie, log
masking), errors.py (the one error-to-status map), events.py (/events), metrics.py (/metrics), web.py (the
kiosk page). Nothing here imports device.teach: the Teach API registers its routes and errors on the server.
"""
