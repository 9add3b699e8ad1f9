"""hostfwd rules: QEMU's syntax in, passt's -t/-u options out, clear errors for malformed rules."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvmlite.backends.net.hostfwd import HostFwd, parse_hostfwd, passt_args
from kvmlite.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("tcp::2222-:22", HostFwd("tcp", "", 2222, 22)),
        ("::2222-:22", HostFwd("tcp", "", 2222, 22)),  # QEMU: empty protocol is tcp
        ("udp:127.0.0.1:5353-:53", HostFwd("udp", "127.0.0.1", 5353, 53)),
        ("tcp:0.0.0.0:1-:65535", HostFwd("tcp", "0.0.0.0", 1, 65535)),
        ("tcp:[::1]:8080-:80", HostFwd("tcp", "::1", 8080, 80)),
        ("tcp:[2001:DB8::1]:8080-:80", HostFwd("tcp", "2001:db8::1", 8080, 80)),
        ("tcp::080-:08", HostFwd("tcp", "", 80, 8)),
    ],
)
def test_valid_rules(text: str, want: HostFwd) -> None:
    assert parse_hostfwd(text) == want


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "is not [tcp|udp]"),
        ("tcp:2222:22", "is not [tcp|udp]"),
        ("tcp::2222:22", "is not [tcp|udp]"),
        ("tcp::2222-22", "is not [tcp|udp]"),
        ("sctp::2222-:22", "protocol 'sctp'"),
        ("TCP::2222-:22", "protocol 'TCP'"),
        ("tcp::0-:22", "outside 1..65535"),
        ("tcp::2222-:0", "outside 1..65535"),
        ("tcp::65536-:22", "outside 1..65535"),
        ("tcp::-:22", "host port '' is not a port"),
        ("tcp::2222-:", "guest port '' is not a port"),
        ("tcp::+22-:22", "host port '+22' is not"),
        ("tcp:: 22-:22", "host port ' 22' is not"),
        ("tcp::2_2-:22", "host port '2_2' is not"),
        ("tcp::٢٢-:22", "is not a port"),  # Arabic-Indic digits: isdigit() but not ASCII
        ("tcp::2222-:22-23", "guest port '22-23'"),
        ("tcp:localhost:2222-:22", "not an IPv4 or IPv6 address"),
        ("tcp:256.0.0.1:2222-:22", "not an IPv4 or IPv6 address"),
        ("tcp:[]:2222-:22", "empty brackets"),
        ("tcp:[127.0.0.1]:2222-:22", "brackets are for IPv6"),
        ("tcp:[::1:2222-:22", "is not [tcp|udp]"),
        ("tcp::2222-10.0.2.15:22", "guest address '10.0.2.15' cannot be honoured"),
        ("tcp::2222-[fd00::2]:22", "guest address '[fd00::2]' cannot be honoured"),
        ("tcp::2222-x:22", "cannot be honoured"),
    ],
)
def test_malformed_rules(text: str, words: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_hostfwd(text)
    assert words in str(e.value)
    assert repr(text) in str(e.value)  # the message names the rule


def test_guest_address_error_suggests_the_rule_without_it() -> None:
    with pytest.raises(ConfigError, match=r"leave it empty \(udp:127.0.0.1:5353-:53\)"):
        parse_hostfwd("udp:127.0.0.1:5353-10.0.2.15:53")


def test_passt_args() -> None:
    fwds = [
        parse_hostfwd("tcp::2222-:22"),
        parse_hostfwd("udp:127.0.0.1:5353-:53"),
        parse_hostfwd("tcp:[::1]:8080-:80"),
        parse_hostfwd("udp::2222-:22"),  # same port, other protocol: fine
    ]
    assert passt_args(fwds) == [
        "-t",
        "2222:22",
        "-u",
        "127.0.0.1/5353:53",
        "-t",
        "::1/8080:80",
        "-u",
        "2222:22",
    ]
    assert passt_args([]) == []


def test_passt_args_refuses_a_host_port_twice() -> None:
    with pytest.raises(ConfigError, match="both forward tcp host port 2222"):
        passt_args([parse_hostfwd("tcp::2222-:22"), parse_hostfwd("tcp:127.0.0.1:2222-:23")])


def test_passt_args_refuses_a_bad_protocol() -> None:
    with pytest.raises(ConfigError, match="not tcp or udp"):
        passt_args([HostFwd("icmp", "", 1, 1)])


ports = st.integers(1, 65535)
addrs = st.one_of(
    st.just(""),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
)


@given(st.sampled_from(["tcp", "udp"]), addrs, ports, ports)
def test_round_trip(proto: str, addr: str, hport: int, gport: int) -> None:
    fwd = HostFwd(proto, addr, hport, gport)
    assert parse_hostfwd(str(fwd)) == fwd
    opt, spec = passt_args([fwd])
    assert opt == ("-t" if proto == "tcp" else "-u")
    assert spec.endswith(f"{hport}:{gport}")


@given(st.text(alphabet="tcpudx:[]-.0123456789 +f", max_size=30) | st.text(max_size=30))
def test_anything_else_is_a_config_error_or_a_valid_rule(text: str) -> None:
    try:
        fwd = parse_hostfwd(text)
    except ConfigError as e:
        assert "hostfwd" in str(e)
        return
    assert fwd.proto in ("tcp", "udp")
    assert 1 <= fwd.host_port <= 65535 and 1 <= fwd.guest_port <= 65535
