"""NetConfig: the ``-n`` syntax shared by ``kvmlite run`` and ``kvmlite serve net``."""

from __future__ import annotations

import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvmlite.backends.net.open import open_net
from kvmlite.backends.net.socket_stream import StreamSocketBackend
from kvmlite.config.net import NetConfig, NetKind
from kvmlite.errors import ConfigError


def test_kinds_and_options() -> None:
    tap = NetConfig.parse(
        "tap,ifname=kt0,queues=4,script=/bin/up,vnet_hdr=off,mac=52:54:00:AA:bb:01"
    )
    assert (tap.kind, tap.ifname, tap.queues, tap.script, tap.vnet_hdr, tap.mac) == (
        NetKind.TAP,
        "kt0",
        4,
        "/bin/up",
        False,
        "52:54:00:aa:bb:01",
    )
    user = NetConfig.parse("user,hostfwd=tcp::2222-:22,hostfwd=udp:127.0.0.1:5353-:53")
    assert user.kind is NetKind.USER
    assert user.hostfwd == ("tcp::2222-:22", "udp:127.0.0.1:5353-:53")
    assert NetConfig.parse("socket,listen=/tmp/x").listen == "/tmp/x"
    assert NetConfig.parse("none").kind is NetKind.NONE


def test_user_is_the_default_kind() -> None:
    assert NetConfig.parse("").kind is NetKind.USER
    spec = NetConfig.parse("hostfwd=tcp::2222-:22")
    assert (spec.kind, spec.hostfwd) == (NetKind.USER, ("tcp::2222-:22",))


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("slirp", "kind must be one of"),
        ("tap,ifname=", "bad option"),
        ("tap,bogus=1", "tap takes"),
        ("user,ifname=x", "user takes"),
        ("tap,queues=0", "bad queues"),
        ("tap,queues=x", "bad queues"),
        ("tap,queues=257", "bad queues"),
        ("tap,ifname=much-too-long-name", "bad ifname"),
        ("tap,ifname=a/b", "bad ifname"),
        ("tap,vnet_hdr=maybe", "on or off"),
        ("tap,mac=01:00:5e:00:00:01", "unicast"),
        ("tap,mac=52:54:00:00:00", "unicast"),
        ("socket", "listen=PATH or connect=PATH"),
        ("socket,listen=/a,connect=/b", "listen=PATH or connect=PATH"),
        ("none,mac=52:54:00:00:00:01", "none takes none"),
        ("user,hostfwd=tcp:2222", "hostfwd"),
    ],
)
def test_bad_specs_name_what_is_wrong(text: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        NetConfig.parse(text)


@given(st.text(max_size=60))
def test_any_text_parses_or_is_a_config_error(text: str) -> None:
    try:
        spec = NetConfig.parse(text)
    except ConfigError:
        return
    assert NetConfig.parse(spec.spec_text()) == spec  # round-trips through its text


def test_open_socket_backends(tmp_path) -> None:
    path = tmp_path / "n.sock"
    [server] = open_net(NetConfig.parse(f"socket,listen={path}"))
    try:
        [client] = open_net(NetConfig.parse(f"socket,connect={path}"))
        try:
            assert isinstance(client, StreamSocketBackend)
            assert client.connected
        finally:
            client.close()
    finally:
        server.close()
    with pytest.raises(ConfigError, match="cannot connect"):
        open_net(NetConfig.parse(f"socket,connect={tmp_path / 'missing'}"))
    assert open_net(NetConfig.parse("none")) == []


def test_socket_backend_refuses_a_used_path(tmp_path) -> None:
    path = tmp_path / "busy.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    try:
        with pytest.raises(ConfigError, match="cannot listen"):
            open_net(NetConfig.parse(f"socket,listen={path}"))
    finally:
        s.close()
