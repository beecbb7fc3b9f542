"""A restart on the same ``--port`` gets that port back while only TIME-WAIT connections of the previous run hold it,
and a port something still listens on counts as taken."""
from __future__ import annotations

import errno
import socket

import pytest
from waitress import create_server

from app.cli.serve import find_free_port


def _port_left_in_time_wait() -> int:
    """Serve one connection on a fresh port and close it from the server's side, as waitress does after a response:
    the server's end of that connection stays in TIME-WAIT after the listener is gone."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    with socket.create_connection(("127.0.0.1", port)) as peer:
        accepted, _ = listener.accept()
        accepted.close()  # the server closes first: its end goes to TIME-WAIT
        peer.recv(1)
    listener.close()
    return port


def test_a_port_held_only_by_time_wait_is_taken_back(app):
    port = _port_left_in_time_wait()
    with socket.socket() as plain:  # the situation is real: a bind without SO_REUSEADDR is refused
        with pytest.raises(OSError) as refused:
            plain.bind(("127.0.0.1", port))
        assert refused.value.errno == errno.EADDRINUSE
    assert find_free_port("127.0.0.1", port) == port
    server = create_server(app, host="127.0.0.1", port=port)  # and waitress binds it (SO_REUSEADDR too)
    server.close()


def test_a_port_with_a_listener_is_still_taken():
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert find_free_port("127.0.0.1", port) != port
