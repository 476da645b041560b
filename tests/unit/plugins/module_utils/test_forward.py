# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""_forward: the overlap rule, one table run through the module's check and the inventory's alike (issue 20)."""

from __future__ import annotations

import pytest

from ansible_collections.kvmnet.nat.plugins.module_utils import _forward
from ansible_collections.kvmnet.nat.plugins.module_utils import _inventory

PUBLIC, PUBLIC6 = '203.0.113.10', '2001:db8::10'
V4, V4B, V6 = '192.168.122.10', '192.168.122.11', '2001:db8:1::10'

# (case, first forward, second forward, do they overlap); a forward is {ip, host, and optionally proto,
# public_ip, in_interface, sources}; a port without public_ip takes the host's public address of its family
OVERLAPS = [
    ('same port, same public address', {'ip': V4, 'host': 8080}, {'ip': V4B, 'host': 8080}, True),
    ('IPv4 and IPv6 guest on one port', {'ip': V4, 'host': 8080}, {'ip': V6, 'host': 8080}, False),
    ('tcp and udp', {'ip': V4, 'host': 53}, {'ip': V4B, 'host': 53, 'proto': 'udp'}, False),
    ('two public addresses', {'ip': V4, 'host': 80, 'public_ip': '203.0.113.11'},
     {'ip': V4B, 'host': 80, 'public_ip': '203.0.113.12'}, False),
    ('the same public address written out', {'ip': V4, 'host': 80, 'public_ip': '203.0.113.11'},
     {'ip': V4B, 'host': 80, 'public_ip': '203.0.113.11'}, True),
    ('two inbound interfaces', {'ip': V4, 'host': 8080, 'in_interface': 'eth0'},
     {'ip': V4B, 'host': 8080, 'in_interface': 'eth1'}, False),
    ('an interface and no interface', {'ip': V4, 'host': 8080, 'in_interface': 'eth0'}, {'ip': V4B, 'host': 8080}, True),
    ('a wildcard interface and one it matches', {'ip': V4, 'host': 8080, 'in_interface': 'eth+'},
     {'ip': V4B, 'host': 8080, 'in_interface': 'eth0'}, True),
    ('a wildcard interface and one it does not match', {'ip': V4, 'host': 8080, 'in_interface': 'eth+'},
     {'ip': V4B, 'host': 8080, 'in_interface': 'wlan0'}, False),
    ('two wildcards, one inside the other', {'ip': V4, 'host': 8080, 'in_interface': 'en+'},
     {'ip': V4B, 'host': 8080, 'in_interface': 'enp+'}, True),
    ('a port inside a range', {'ip': V4, 'host': '1000-1010'}, {'ip': V4B, 'host': 1005}, True),
    ('adjacent ranges', {'ip': V4, 'host': '1000-1004'}, {'ip': V4B, 'host': '1005-1009'}, False),
    ('disjoint allow-lists do not separate two forwards', {'ip': V4, 'host': 22, 'sources': ['198.51.100.0/24']},
     {'ip': V4B, 'host': 22, 'sources': ['192.0.2.0/24']}, True),
    ('two IPv6 guests', {'ip': V6, 'host': 443}, {'ip': '2001:db8:1::11', 'host': 443}, True),
]


def _module_forward(index, item):
    raw = {'guest': 'g%d' % index, 'guest_ip': item['ip'], 'host_port': item['host'], 'proto': item.get('proto', 'tcp'),
           'sources': item.get('sources', [])}
    raw.update({key: item[key] for key in ('public_ip', 'in_interface') if key in item})
    if isinstance(item['host'], str):
        raw['guest_port'] = item['host']
    return raw


def _inventory_guest(index, item):
    port = {'host': item['host']}
    port.update({key: item[key] for key in ('proto', 'public_ip', 'in_interface', 'sources') if key in item})
    return {'name': 'g%d' % index, 'ip': item['ip'], 'declared_by': 'g%d' % index, 'ports': [port]}


@pytest.mark.parametrize('case, first, second, overlap', OVERLAPS, ids=[case[0] for case in OVERLAPS])
def test_the_module_and_the_inventory_apply_one_overlap_rule(case, first, second, overlap):
    raws = [_module_forward(1, first), _module_forward(2, second)]
    try:
        _forward.parse_forwards(raws, PUBLIC, PUBLIC6, None)
        module_says = False
    except _forward.ForwardError as exc:
        assert all('claim the same' in error for error in exc.errors), exc.errors
        module_says = True
    inventory_says = bool(_inventory.overlaps([_inventory_guest(1, first), _inventory_guest(2, second)]))
    assert (module_says, inventory_says) == (overlap, overlap)


def test_a_guest_whose_address_is_not_declared_may_be_of_either_family():
    """The inventory does not know the family of a guest it has no address for: it claims the port in both."""
    guests = [{'name': 'a', 'declared_by': 'a', 'ports': [{'host': 8080}]},
              {'name': 'b', 'ip': V6, 'declared_by': 'b', 'ports': [{'host': 8080}]}]
    assert _inventory.overlaps(guests) == [
        'b tcp/8080 (declared by b) and a tcp/8080 (declared by a) claim the same port on the public address']


def test_a_written_out_address_and_the_default_one_are_told_apart_by_the_module():
    """The inventory cannot know the host's default public address; the module, which does, refuses."""
    guests = [{'name': 'a', 'ip': V4, 'declared_by': 'a', 'ports': [{'host': 80}]},
              {'name': 'b', 'ip': V4B, 'declared_by': 'b', 'ports': [{'host': 80, 'public_ip': PUBLIC}]}]
    assert _inventory.overlaps(guests) == []
    with pytest.raises(_forward.ForwardError, match='claim the same tcp port'):
        _forward.parse_forwards([_module_forward(1, {'ip': V4, 'host': 80}),
                                 _module_forward(2, {'ip': V4B, 'host': 80, 'public_ip': PUBLIC})], PUBLIC, None, None)


def test_unscoped_forwards_are_checked_against_every_public_address():
    raws = [_module_forward(1, {'ip': V4, 'host': 80, 'public_ip': '203.0.113.11'}),
            _module_forward(2, {'ip': V4B, 'host': 80, 'public_ip': '203.0.113.12'}),
            _module_forward(3, {'ip': '192.168.122.12', 'host': '79-81', 'in_interface': 'eth0'})]
    with pytest.raises(_forward.ForwardError) as info:
        _forward.parse_forwards(raws, None, None, None)
    assert info.value.errors == [
        'forward g1 tcp/80->80 and forward g3 tcp/79-81->79-81 claim the same tcp port(s) on 203.0.113.11',
        'forward g2 tcp/80->80 and forward g3 tcp/79-81->79-81 claim the same tcp port(s) on 203.0.113.12']
