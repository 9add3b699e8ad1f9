"""Management front-ends: requests in, actions out; they never touch a device
(DESIGN.md rule 5).

``rest`` is the Firecracker-compatible REST API (``http`` parses its HTTP/1.1
requests, ``server`` serves it on a unix socket; see docs/api.md). ``qmp`` is
the QEMU Machine Protocol monitor (protocol core in qmp.py, commands in
qmp_commands.py, sockets in qmp_server.py, a small client in qmp_client.py;
see docs/qmp.md). ``rundir`` is the per-VM runtime directory that ``kvmlite
ps`` and friends read; ``management`` starts the front-ends of ``kvmlite run``.
"""
