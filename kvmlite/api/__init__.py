"""Management front-ends: requests in, actions out; they never touch a device.

``rest`` is the Firecracker-compatible REST API (``http`` parses its
HTTP/1.1 requests, ``server`` serves it on a unix socket); see docs/api.md.
"""
