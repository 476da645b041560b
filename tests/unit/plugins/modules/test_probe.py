# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""probe() against servers on the loopback address (no route, rule or interface is changed)."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time

import pytest

from ansible_collections.kvmnet.nat.plugins.modules.probe import attempt_until, outside, probe, vantage


def _tcp_server(banner):
    server = socket.socket()
    server.bind(('127.0.0.1', 0))
    server.listen(1)

    def serve():
        conn, _addr = server.accept()
        if banner:
            conn.sendall(banner)
        conn.recv(16)
        conn.close()
        server.close()

    threading.Thread(target=serve, daemon=True).start()
    return server.getsockname()[1]


def test_tcp_banner_is_the_answer():
    port = _tcp_server(b'web01 203.0.113.50\nmore\n')
    assert probe('127.0.0.1', port, 'tcp', '', 2.0) == ('web01 203.0.113.50', '')


def test_tcp_silent_server_is_reachable_without_answer():
    port = _tcp_server(b'')
    assert probe('127.0.0.1', port, 'tcp', '', 0.3) == ('', '')


def test_tcp_closed_port_is_refused():
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    port = sock.getsockname()[1]
    sock.close()
    assert probe('127.0.0.1', port, 'tcp', '', 1.0) == ('', 'refused')


def test_udp_answer():
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(('127.0.0.1', 0))

    def serve():
        data, peer = server.recvfrom(64)
        server.sendto(b'web01 ' + data, peer)
        server.close()

    threading.Thread(target=serve, daemon=True).start()
    assert probe('127.0.0.1', server.getsockname()[1], 'udp', 'hello', 2.0) == ('web01 hello', '')


@pytest.mark.parametrize('address, sources, expected', [
    ('203.0.113.50', [], False),                                   # no allow-list: probe
    ('203.0.113.50', ['203.0.113.50/32'], False),
    ('203.0.113.51', ['203.0.113.50/32'], True),                   # restricted, not from here
    ('203.0.113.51', ['198.51.100.0/24', '203.0.113.0/24'], False),
    ('2001:db8::50', ['203.0.113.0/24'], True),                    # other family: outside
    ('', ['203.0.113.0/24'], True),                                # no route: cannot tell, not probed
])
def test_outside_the_allow_list(address, sources, expected):
    assert outside(address, [ipaddress.ip_network(s) for s in sources]) is expected


def test_vantage_of_loopback_is_loopback():
    assert vantage('127.0.0.1', 9) == '127.0.0.1'


def test_attempts_stop_at_the_first_answer():
    answers = iter([('', 'refused'), ('', 'timeout'), ('web01 x', '')])
    assert attempt_until(time.monotonic() + 10, lambda: next(answers)) == ('web01 x', '', 3)


def test_attempts_are_bounded_in_time():
    start = time.monotonic()
    answer, error, attempts = attempt_until(start + 1.5, lambda: ('', 'refused'))
    assert (answer, error) == ('', 'refused') and 2 <= attempts <= 3
    assert time.monotonic() - start < 2.5


def test_no_retry_when_asked_for_one_attempt():
    assert attempt_until(time.monotonic(), lambda: ('', 'refused')) == ('', 'refused', 1)
