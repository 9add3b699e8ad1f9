"""Management front-ends: requests in, actions out (DESIGN.md rule 5).

``qmp`` is the QEMU Machine Protocol monitor (protocol core in qmp.py,
commands in qmp_commands.py, sockets in qmp_server.py, a small client in
qmp_client.py); ``rundir`` is the per-VM runtime directory that ``kvmlite
ps`` and friends read.
"""
