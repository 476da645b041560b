# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The host's addresses and connected networks, from recorded ``ip -j`` output."""

from __future__ import annotations

import ipaddress

import pytest

from ansible_collections.kvmnet.nat.plugins.module_utils import _routes as R
from ansible_collections.kvmnet.nat.tests.unit.plugins import fakes

ADDR = ('[{"ifname":"lo","addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8}]},'
        '{"ifname":"virbr0","addr_info":[{"family":"inet","local":"192.168.122.1","prefixlen":24},'
        '{"family":"inet","local":"192.168.50.1","prefixlen":24},'
        '{"family":"inet6","local":"2001:db8:122::1","prefixlen":64}]},'
        '{"ifname":"eth0","addr_info":[{"family":"inet","local":"203.0.113.10","prefixlen":24},{"junk":1}]}]')
ROUTE_CONNECTED = '[{"dst":"192.168.122.10","dev":"virbr0","prefsrc":"192.168.122.1","flags":[],"uid":0,"cache":[]}]'
ROUTE_VIA = '[{"dst":"10.9.0.5","gateway":"203.0.113.1","dev":"eth0","prefsrc":"203.0.113.10"}]'


def test_parse_addresses_lists_every_address_with_its_device():
    assert [(str(iface), dev) for iface, dev in R.parse_addresses(ADDR)] == [
        ('127.0.0.1/8', 'lo'), ('192.168.122.1/24', 'virbr0'), ('192.168.50.1/24', 'virbr0'),
        ('2001:db8:122::1/64', 'virbr0'), ('203.0.113.10/24', 'eth0')]


@pytest.mark.parametrize('text', ['not json', '{"a": 1'])
def test_parse_addresses_refuses_what_is_not_json(text):
    with pytest.raises(R.RouteError):
        R.parse_addresses(text)


def test_host_interfaces_needs_ip():
    with pytest.raises(R.RouteError):
        R.host_interfaces(fakes.FakeModule(answers={}, binaries=set()))


@pytest.mark.parametrize('ip, answers, expected', [
    ('192.168.122.10', {'ip -j -4 route get': (0, ROUTE_CONNECTED, '')}, '192.168.122.0/24'),
    ('10.9.0.5', {'ip -j -4 route get': (0, ROUTE_VIA, '')}, None),          # behind a gateway: no hairpin scope
    ('192.168.122.10', {'ip -j -4 route get': (2, '', 'RTNETLINK answers: Network is unreachable')}, None),
    ('192.168.122.10', {'ip -j -4 route get': (0, '[]', '')}, None),
])
def test_connected_network(ip, answers, expected):
    result = R.connected_network(fakes.FakeModule(answers=answers, binaries={'ip'}), ipaddress.ip_address(ip), R.parse_addresses(ADDR))
    assert (str(result) if result else None) == expected


def test_many_guests_are_looked_up_in_one_batch_per_family():
    """More than BATCH_FROM guest addresses: one ``ip -batch`` per family (as ``ip -j -force -batch -`` prints
    it: one JSON list per line, nothing for an unreachable address), each route matched by its dst."""
    from ansible_collections.kvmnet.nat.plugins.module_utils import _forward as F
    raw = [dict(guest='g%d' % i, guest_ip='192.168.122.%d' % (10 + i), host_port=8000 + i) for i in range(10)]
    raw += [dict(guest='v6', guest_ip='2001:db8:122::10', host_port=9000, public_ip='2001:db8::10')]
    lines = ['[{"dst":"192.168.122.%d","dev":"virbr0","prefsrc":"192.168.122.1","flags":[],"uid":0,"cache":[]}]'
             % (10 + i) for i in range(10) if i != 3]          # .13: unreachable, nothing printed
    answers = [('ip -j -4 -force -batch -', (1, '\n'.join(lines) + '\n', 'Command failed -:4')),
               ('ip -j -6 -force -batch -', (0, '[{"dst":"2001:db8:122::10","dev":"virbr0"}]\n', ''))]
    module = fakes.FakeModule(answers=answers, binaries={'ip'})
    forwards, warnings = R.with_hairpin_networks(module, F.parse_forwards(raw, public_ip='203.0.113.10'),
                                                 R.parse_addresses(ADDR))
    batch = ''.join('route get 192.168.122.%d\n' % (10 + i) for i in range(10))
    assert module.calls[0] == ('ip -j -4 -force -batch -', batch)
    expected = ['192.168.122.0/24'] * 3 + ['None'] + ['192.168.122.0/24'] * 6 + ['2001:db8:122::/64']
    assert [str(f.guest_network) for f in forwards] == expected
    assert len(warnings) == 1 and '192.168.122.13 is not on a network connected to this host' in warnings[0]
