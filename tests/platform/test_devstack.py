"""`free_port` gives the test stacks ports that no client connection can take first."""

from __future__ import annotations

import socket

import pytest

from gobuild.platform import devstack


def ephemeral_range() -> tuple[int, int]:
    low, high = devstack._EPHEMERAL_RANGE.read_text().split()
    return int(low), int(high)


def test_a_free_port_lies_below_the_range_outgoing_connections_take_their_ports_from() -> None:
    low, _ = ephemeral_range()
    with socket.create_server(("127.0.0.1", 0)) as server:
        clients = [socket.create_connection(server.getsockname()) for _ in range(50)]
        try:
            taken = {client.getsockname()[1] for client in clients}
            ports = [devstack.free_port() for _ in range(50)]
        finally:
            for client in clients:
                client.close()
    assert all(port < low for port in ports)
    assert not taken & set(ports)


def test_no_port_is_handed_out_twice_and_each_can_be_bound() -> None:
    ports = [devstack.free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    for port in ports[:20]:
        with socket.create_server(("127.0.0.1", port)):
            pass


def test_a_port_something_listens_on_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        busy_port = busy.getsockname()[1]
        monkeypatch.setattr(devstack, "_LOWEST_PORT", busy_port)
        monkeypatch.setattr(devstack, "_ephemeral_low", lambda: busy_port + 11)
        ports = {devstack.free_port() for _ in range(5)}
    assert busy_port not in ports
    assert ports <= set(range(busy_port + 1, busy_port + 11))
