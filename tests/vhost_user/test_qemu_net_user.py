"""A Linux guest on ``kvmlite serve net user`` (passt): DHCP, a page from the host's
loopback, a forwarded host port, and passt dying under the running guest.

passt takes its addresses from the interface with the default route, so each
test runs ``kvmlite serve net`` (and with it passt) in a namespace of its own
with a veth pair as that interface: ``v0`` 10.88.0.2/24, default route via
10.88.0.1.  The guest then gets 10.88.0.2 by DHCP with 10.88.0.1 as its
router, and passt maps connections to the router's address onto the
namespace's loopback (passt(1), "--no-map-gw" is the opposite), where the
test's HTTP server listens.  Forwarded ports (``hostfwd``) are bound by passt
in that namespace too; the test connects to them with a socket it opens there.
"""

from __future__ import annotations

import http.server
import os
import re
import secrets
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvmlite.testing.netns import NetNs

from . import qemu_rig
from .qemu_rig import GuestShell, NetGuest, boot, serve_net, vhost_user_nic

pytestmark = pytest.mark.slow

# Fixtures shared with the other networking tests.
procs = qemu_rig.procs
net_guest = qemu_rig.net_guest

HOST_IP = "10.88.0.2"
GATEWAY = "10.88.0.1"
MAC = "52:54:00:88:00:02"
HTTP_PORT = 8123
FWD_PORT = 18080
GUEST_PORT = 8080


def passt_namespace(ns: NetNs) -> None:
    """A default route for passt to copy: veth v0 (HOST_IP) via GATEWAY."""
    ns.add_veth("v0", "v1")
    ns.address("v0", f"{HOST_IP}/24")
    ns.ip("route", "add", "default", "via", GATEWAY)


class _Page(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def loopback_page(netns: NetNs) -> Iterator[bytes]:
    """An HTTP server on the namespace's 127.0.0.1:HTTP_PORT serving a random line."""
    body = f"kvmlite-page-{secrets.token_hex(8)}\n".encode()
    handler = type("Page", (_Page,), {"body": body})
    srv = http.server.HTTPServer(("127.0.0.1", HTTP_PORT), handler, bind_and_activate=False)
    srv.socket.close()
    srv.socket = netns.socket()
    srv.server_bind()
    srv.server_activate()
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield body
    srv.shutdown()
    srv.server_close()


def dhcp(shell: GuestShell) -> str:
    """Run udhcpc; the lease line the default guest's event script printed."""
    out = shell.sh("udhcpc -i eth0 -q -n -t 5 -T 2", timeout=60)
    m = re.search(r"DHCP: ip=(\S+) mask=(\S+) router=(\S*) dns=(.*)", out)
    assert m, out
    # passt offers the host's DNS servers; the script wrote them for the resolver.
    servers = re.findall(r"nameserver (\S+)", shell.sh("cat /etc/resolv.conf"))
    assert servers and servers == m.group(4).split(), (servers, m.group(4))
    return f"DHCP: ip={m[1]} mask={m[2]} router={m[3]}"


def start_user_net(procs: list, ns: NetNs, tmp_path: Path, spec: str = "user") -> Path:
    passt_namespace(ns)
    sock = tmp_path / "net.sock"
    serve_net(procs, sock, spec, ns)
    return sock


def http_get(ns: NetNs, port: int, tries: int = 5) -> bytes:
    """GET / from 127.0.0.1:port in ``ns``; passt accepts at once and closes the
    connection if the guest refused it, so an empty answer is tried again."""
    for _ in range(tries):
        s = ns.socket()
        with s:
            s.settimeout(30)
            s.connect(("127.0.0.1", port))
            s.sendall(b"GET / HTTP/1.0\r\nHost: guest\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        if data:
            return data
        time.sleep(0.5)
    return b""


def test_dhcp_then_a_page_from_the_host_loopback(
    procs: list, net_guest: NetGuest, netns: NetNs, loopback_page: bytes, tmp_path: Path
) -> None:
    sock = start_user_net(procs, netns, tmp_path)
    shell = boot(procs, net_guest, vhost_user_nic(sock, MAC))
    lease = dhcp(shell)
    assert lease == f"DHCP: ip={HOST_IP} mask=24 router={GATEWAY}", lease
    assert f"inet {HOST_IP}/24" in shell.sh("ip addr show dev eth0")
    out = shell.sh(f"wget -q -O - http://{GATEWAY}:{HTTP_PORT}/", timeout=60)
    assert loopback_page.decode() in out
    shell.poweroff()


def test_forwarded_host_port_reaches_a_server_in_the_guest(
    procs: list, net_guest: NetGuest, netns: NetNs, tmp_path: Path
) -> None:
    spec = f"user,hostfwd=tcp::{FWD_PORT}-:{GUEST_PORT}"
    sock = start_user_net(procs, netns, tmp_path, spec)
    shell = boot(procs, net_guest, vhost_user_nic(sock, MAC))
    dhcp(shell)
    token = f"kvmlite-guest-{secrets.token_hex(8)}"
    shell.sh(f"mkdir -p /www && echo {token} > /www/index.html")
    shell.sh(f"httpd -p {GUEST_PORT} -h /www")  # it daemonizes
    reply = http_get(netns, FWD_PORT)
    assert reply.startswith(b"HTTP/1.") and b" 200 " in reply.split(b"\r\n")[0], reply[:200]
    assert reply.rstrip().endswith(token.encode()), reply[-200:]
    shell.poweroff()


def passt_pid(server_pid: int) -> int:
    """The passt that ``kvmlite serve net`` started: its child named passt (or
    passt.avx2, the build Debian's passt re-executes on CPUs with AVX2)."""
    children = []
    for task in Path(f"/proc/{server_pid}/task").iterdir():
        children += (task / "children").read_text().split()
    pids = [int(p) for p in children if Path(f"/proc/{p}/comm").read_text().startswith("passt")]
    assert len(pids) == 1, f"passt children of {server_pid}: {pids} of {children}"
    return pids[0]


def test_passt_killed_under_a_running_guest(
    procs: list, net_guest: NetGuest, netns: NetNs, loopback_page: bytes, tmp_path: Path
) -> None:
    """The back-end logs the loss and keeps serving; the guest's console keeps working."""
    sock = start_user_net(procs, netns, tmp_path)
    server = procs[-1]
    shell = boot(procs, net_guest, vhost_user_nic(sock, MAC))
    dhcp(shell)
    # busybox 1.35's wget -T segfaults: timeout(1) bounds the wait on a dead network.
    fetch = f"timeout 10 wget -q -O - http://{GATEWAY}:{HTTP_PORT}/"
    assert loopback_page.decode() in shell.sh(fetch)

    os.kill(passt_pid(server.pid), signal.SIGKILL)
    log = sock.with_suffix(".log")
    said = re.compile(r"^.*passt.*SIGKILL.*$", re.MULTILINE)
    deadline = time.monotonic() + 20
    while not said.search(log.read_text()):
        assert time.monotonic() < deadline, f"no log line about passt's end:\n{log.read_text()}"
        time.sleep(0.2)
    # The guest's traffic now goes nowhere, without harm to anything else.
    rc, out = shell.run(fetch, timeout=60)
    assert rc != 0 and loopback_page.decode() not in out, out
    assert shell.sh("echo console-$((6 * 7))").strip() == "console-42"
    assert server.poll() is None, log.read_text()
    shell.poweroff()
    # The back-end still serves: the next front-end gets a NIC and a working console.
    shell = boot(procs, net_guest, vhost_user_nic(sock, MAC))
    shell.sh("ip link set eth0 up")
    assert shell.sh("echo again-$((6 * 7))").strip() == "again-42"
    shell.poweroff()
    assert server.poll() is None, log.read_text()
