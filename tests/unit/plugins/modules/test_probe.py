# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""probe() against servers on the loopback address (no route, rule or interface is changed)."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from ansible_collections.kvmnet.nat.plugins.modules.probe import attempt_until, judge, outside, probe, vantage


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


# ---------------------------------------------------------------- issue 19: where a probe may go, what it matches

def run_main(args):
    """The module as Ansible runs it: its arguments from a file, its result on stdout."""
    with tempfile.NamedTemporaryFile('w', suffix='.json', delete=False) as handle:
        json.dump({'ANSIBLE_MODULE_ARGS': args}, handle)
    try:
        code = 'from ansible_collections.kvmnet.nat.plugins.modules.probe import main; main()'
        proc = subprocess.run([sys.executable, '-c', code, handle.name], capture_output=True, text=True, timeout=60,
                              env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)), check=False)
    finally:
        os.unlink(handle.name)
    return json.loads(proc.stdout)


@pytest.mark.parametrize('host, reason', [
    ('127.0.0.1', 'a loopback address'),          # the issue: FLUSHALL sent to the controller's own redis
    ('127.1.2.3', 'a loopback address'),
    ('0.0.0.0', 'the unspecified address'),
    ('224.0.0.251', 'a multicast address'),
    ('255.255.255.255', 'the broadcast address'),
    ('169.254.169.254', 'a link-local address (it needs an interface to mean anything)'),
    ('::1', 'a loopback address'),
    ('::', 'the unspecified address'),
    ('fe80::1', 'a link-local address (it needs an interface to mean anything)'),
    ('ff02::1', 'a multicast address'),
])
def test_an_address_no_forward_can_have_is_refused_before_anything_is_sent(host, reason):
    result = run_main({'host': host, 'port': 6379, 'send': 'FLUSHALL\r\n'})
    assert (result.get('failed'), result['msg']) == (
        True, 'host %s is %s: no forward has it, and a probe does not go there' % (host, reason))


def test_a_pattern_that_is_too_long_is_refused():
    result = run_main({'host': '203.0.113.10', 'port': 80, 'expect': 'a' * 300})
    assert (result.get('failed'), result['msg']) == (True, "expect %r is 300 characters long; at most 256" % ('a' * 300))


@pytest.mark.parametrize('answer, expect, expected', [
    ('web01 203.0.113.50', '^web01 ', ''),
    ('web01 203.0.113.50', None, ''),
    ('dns01 x', '^web01 ', "answer does not match '^web01 '"),
    ('', '.', "answer does not match '.'"),
    ('a' * 40 + '!', '^(a+)+$', "expect '^(a+)+$' took more than 1 s to search the answer (nested repeats such as "
                                "(a+)+ take exponential time); write a simpler pattern"),
])
def test_judge(answer, expect, expected):
    start = time.monotonic()
    assert judge(answer, expect) == expected
    assert time.monotonic() - start < 3          # the pattern ran for more than 60 s
