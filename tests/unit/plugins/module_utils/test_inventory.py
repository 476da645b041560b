# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The port-overlap check of the inventory, and the bounded ``expect`` match (issue 19)."""

from __future__ import annotations

import random
import time

import pytest

from ansible_collections.kvmnet.nat.plugins.module_utils import _forward
from ansible_collections.kvmnet.nat.plugins.module_utils import _inventory


def pairwise(guests):
    """The check as it was: every claim against every earlier one (the reference for the error texts)."""
    errors, claims = [], {}
    for guest in guests:
        for port in guest['ports']:
            if not port or port.get('host') is None or guest.get('name') is None:
                continue
            ports = _forward.parse_ports(port['host'])
            key = (port.get('proto') or 'tcp', port.get('public_ip') or 'the public address')
            for other, other_ports in claims.get(key, []):
                if ports.overlaps(other_ports):
                    errors.append('%s %s/%s (declared by %s) and %s %s/%s (declared by %s) claim the same port on %s'
                                  % (guest['name'], key[0], ports, guest['declared_by'], other['name'], key[0],
                                     other_ports, other['declared_by'], key[1]))
            claims.setdefault(key, []).append((guest, ports))
    return errors


def guest(name, *ports, by=None):
    return {'name': name, 'declared_by': by or name, 'ports': list(ports)}


@pytest.mark.parametrize('guests, expected', [
    ([guest('a', {'host': 8080}), guest('b', {'host': 8080})],
     ['b tcp/8080 (declared by b) and a tcp/8080 (declared by a) claim the same port on the public address']),
    ([guest('a', {'host': '1000-1010'}), guest('b', {'host': 1005}, {'host': 1011})],
     ['b tcp/1005 (declared by b) and a tcp/1000-1010 (declared by a) claim the same port on the public address']),
    ([guest('a', {'host': 53, 'proto': 'udp'}), guest('b', {'host': 53}), guest('c', {'host': 53, 'public_ip': '203.0.113.11'})],
     []),
    ([guest('a', {'host': 2000}), guest('b', {'host': '1-65535'}), guest('c', {'host': 3000})],
     ['b tcp/1-65535 (declared by b) and a tcp/2000 (declared by a) claim the same port on the public address',
      'c tcp/3000 (declared by c) and b tcp/1-65535 (declared by b) claim the same port on the public address']),
    ([guest('a', {'host': 10}, None, {'guest': 1}), guest(None, {'host': 10})], []),       # failed checks are left out
    ([guest('a', {'host': 80, 'public_ip': '203.0.113.11'}), guest('b', {'host': '79-81', 'public_ip': '203.0.113.11'}),
      guest('c', {'host': 81, 'public_ip': '203.0.113.11'})],
     ['b tcp/79-81 (declared by b) and a tcp/80 (declared by a) claim the same port on 203.0.113.11',
      'c tcp/81 (declared by c) and b tcp/79-81 (declared by b) claim the same port on 203.0.113.11']),
])
def test_overlaps(guests, expected):
    assert _inventory.overlaps(guests) == expected
    assert pairwise(guests) == expected


@pytest.mark.parametrize('seed', range(8))
def test_the_sweep_names_the_same_pairs_in_the_same_order_as_the_pairwise_check(seed):
    rng = random.Random(seed)
    guests = []
    for index in range(40):
        ports = []
        for _unused in range(rng.randint(0, 4)):
            first = rng.randint(1, 200)
            port = {'host': first if rng.random() < 0.6 else '%d-%d' % (first, first + rng.randint(0, 15))}
            if rng.random() < 0.3:
                port['proto'] = 'udp'
            if rng.random() < 0.2:
                port['public_ip'] = '203.0.113.11'
            ports.append(port)
        guests.append(guest('g%d' % index, *ports, by='h%d' % (index % 7)))
    assert _inventory.overlaps(guests) == pairwise(guests)


def test_twenty_thousand_ports_are_checked_in_n_log_n():
    guests = [guest('g%d' % i, *({'host': 1 + i * 3 + j} for j in range(2))) for i in range(10000)]
    guests.append(guest('late', {'host': 4}))
    start = time.monotonic()
    errors = _inventory.overlaps(guests)
    elapsed = time.monotonic() - start
    assert errors == ['late tcp/4 (declared by late) and g1 tcp/4 (declared by g1) claim the same port on the public address']
    assert elapsed < 2.0, elapsed           # pairwise: 16 s on the machine of the issue
