# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The nftables backend with real packets, in throwaway namespaces (root; see nftlab.py).

libvirt's nftables tables (with their reject) are loaded on the hypervisor; the backend's transaction is
checked with ``nft -c -f`` and loaded with ``nft -f``; then the client reaches what is declared, nothing
else, re-planning is a no-op, and removing leaves libvirt's tables exactly as they were.
"""

from __future__ import annotations

import pytest

from ansible_collections.kvmnet.nat.plugins.module_utils import _forward as F

from nftlab import NftLab

NET = '192.168.122.0/24'
FORWARDS = [
    dict(guest='web01', guest_ip='192.168.122.10', host_port=8080, guest_port=80),
    dict(guest='web01', guest_ip='192.168.122.10', host_port=8443, guest_port=443, masquerade='always'),
    dict(guest='web01', guest_ip='192.168.122.10', host_port='10000-10002', guest_port='20000-20002'),
    dict(guest='web01', guest_ip='192.168.122.10', proto='udp', host_port=5353, guest_port=53),
    dict(guest='web01', guest_ip='192.168.122.10', host_port=2222, guest_port=22, sources=['198.51.100.0/24']),
    dict(guest='web01', guest_ip='192.168.122.10', host_port=2223, guest_port=22, sources=['203.0.113.0/24']),
    dict(guest='web01', guest_ip='192.168.122.10', host_port=7000, guest_port=81, in_interface='eth0'),
    dict(guest='web01', guest_ip='192.168.122.10', host_port=7001, guest_port=81, in_interface='eth9'),
    dict(guest='web01', guest_ip='2001:db8:122::10', host_port=8080, guest_port=80, public_ip='2001:db8::10'),
    # hairpin (masquerade auto with the guest network), plain and with sources; sources of every map kind
    dict(guest='web01', guest_ip='192.168.122.10', host_port=8081, guest_port=80, guest_network=NET),
    dict(guest='web01', guest_ip='192.168.122.10', host_port=2224, guest_port=22, guest_network=NET,
         sources=['203.0.113.50', NET]),                            # one address (hash map), a network (interval)
    dict(guest='web01', guest_ip='192.168.122.10', host_port=2225, guest_port=22, guest_network=NET,
         sources=['203.0.113.0/24']),                               # the guest network not among them
    dict(guest='web01', guest_ip='192.168.122.10', host_port='3000-3001', sources=['203.0.113.50']),   # range kept
    dict(guest='web01', guest_ip='192.168.122.10', host_port='11000-11001', guest_port='21000-21001',
         sources=['203.0.113.0/24']),                               # a shifted range, port by port
    dict(guest='web01', guest_ip='2001:db8:122::10', host_port=2222, guest_port=22, public_ip='2001:db8::10',
         sources=['2001:db8::/64']),
    dict(guest='web01', guest_ip='2001:db8:122::10', host_port=2226, guest_port=22, public_ip='2001:db8::10',
         sources=['2001:db8:9::/48']),
]


@pytest.fixture(scope='module')
def lab():
    lab = NftLab()
    try:
        lab.up()
        lab.baseline = lab.ruleset()
        lab.server = lab.serve('web01', 'web01', ['22', '80', '81', '443', '20000-20002', '3000-3001', '21000-21001'], ['53'])
        yield lab
    finally:
        lab.down()


@pytest.fixture(scope='module')
def applied(lab):
    backend = lab.backend()
    desired = backend.desired(F.parse_forwards(FORWARDS, public_ip='203.0.113.10'))
    plan = backend.plan(backend.read(), desired)
    assert plan.changed
    backend.test(plan)                    # nft -c -f
    backend.apply(plan)                   # nft -f
    return backend, desired


@pytest.mark.parametrize('proto, address, port, answer', [
    ('tcp', '203.0.113.10', 8080, 'web01 203.0.113.50 80'),              # the guest sees the client
    ('tcp', '203.0.113.10', 8443, 'web01 192.168.122.1 443'),            # masquerade always
    ('tcp', '203.0.113.10', 10000, 'web01 203.0.113.50 20000'),          # a shifted range, port by port
    ('tcp', '203.0.113.10', 10002, 'web01 203.0.113.50 20002'),
    ('udp', '203.0.113.10', 5353, 'web01 203.0.113.50 53'),
    ('tcp', '203.0.113.10', 2223, 'web01 203.0.113.50 22'),              # a source that is allowed
    ('tcp', '203.0.113.10', 7000, 'web01 203.0.113.50 81'),              # its in_interface
    ('tcp', '2001:db8::10', 8080, 'web01 2001:db8::50 80'),              # IPv6 in the same table
    ('tcp', '203.0.113.10', 2224, 'web01 203.0.113.50 22'),              # its one-address source
    ('tcp', '203.0.113.10', 3001, 'web01 203.0.113.50 3001'),            # a range kept, with sources
    ('tcp', '203.0.113.10', 11001, 'web01 203.0.113.50 21001'),          # a shifted range, with sources
    ('tcp', '2001:db8::10', 2222, 'web01 2001:db8::50 22'),              # IPv6 with sources
])
def test_the_client_reaches_declared_ports(lab, applied, proto, address, port, answer):
    assert lab.probe('client', proto, address, port, timeout=3) == answer


@pytest.mark.parametrize('proto, address, port', [
    ('tcp', '203.0.113.10', 2222),       # a source that is not allowed
    ('tcp', '203.0.113.10', 7001),       # another interface
    ('tcp', '203.0.113.10', 9999),       # not declared
    ('tcp', '203.0.113.10', 10003),      # just past the range
    ('tcp', '192.168.122.10', 80),       # the guest itself, past the DNAT: libvirt's reject
    ('tcp', '2001:db8::10', 2226),       # IPv6, a source that is not allowed
])
def test_what_is_not_declared_is_refused(lab, applied, proto, address, port):
    assert lab.probe('client', proto, address, port) in ('REFUSED', 'TIMEOUT')


@pytest.mark.parametrize('port, answer', [
    (8081, 'web01 192.168.122.1 80'),       # hairpin: another guest by the public address, masqueraded
    (2224, 'web01 192.168.122.1 22'),       # the same through a forward whose sources list the guest network
    (8080, 'web01 192.168.122.11 80'),      # no guest network given: no hairpin masquerade (the module finds it)
])
def test_hairpin_from_a_second_guest(lab, applied, port, answer):
    assert lab.probe('web02', 'tcp', '203.0.113.10', port, timeout=3) == answer


def test_a_source_not_allowed_from_the_guest_network_is_not_forwarded(lab, applied):
    # 2225's sources leave out the guest network: its hairpin mark is set, but no DNAT happens and the
    # connection is the host's own (nothing listens there)
    assert lab.probe('web02', 'tcp', '203.0.113.10', 2225) in ('REFUSED', 'TIMEOUT')


def test_host_local_access(lab, applied):
    assert lab.probe('hv', 'tcp', '203.0.113.10', 8080).startswith('web01 ')


def test_replanning_after_apply_is_a_no_op(lab, applied):
    backend, desired = applied
    plan = backend.read_back(desired)
    assert (plan.changed, plan.payload, plan.reasons) == (False, '', [])
    forward = lab.x('hv', 'nft', 'list', 'chain', 'ip', 'libvirt_network', 'forward').stdout
    rules = [line.strip() for line in forward.splitlines() if 'counter' in line]
    assert rules[0].startswith('ct mark & 0x00200000 == 0x00200000 counter packets ')
    assert rules[0].endswith('accept comment "kvmnet.nat: accept"') and len(rules) == 4


def test_libvirt_rebuilding_its_rules_is_repaired(lab, applied):
    backend, desired = applied
    live = backend.read()
    handle = [r.handle for r in live.libvirt['ip'] if r.ours][0]
    lab.x('hv', 'nft', 'delete', 'rule', 'ip', 'libvirt_network', 'forward', 'handle', str(handle))
    lab.x('hv', 'nft', 'insert', 'rule', 'ip', 'libvirt_network', 'forward', 'counter', 'jump', 'guest_cross')
    assert lab.probe('client', 'tcp', '203.0.113.10', 8080) in ('REFUSED', 'TIMEOUT')    # libvirt's reject wins
    plan = backend.plan(backend.read(), desired)
    assert plan.reasons == ['ip libvirt_network forward: accept rule added']
    backend.test(plan)
    backend.apply(plan)
    assert lab.probe('client', 'tcp', '203.0.113.10', 8080) == 'web01 203.0.113.50 80'
    lab.x('hv', 'nft', 'delete', 'rule', 'ip', 'libvirt_network', 'forward', 'handle',
          str([r.handle for r in backend.read().libvirt['ip'] if r.text == 'counter jump guest_cross'][0]))


def test_removing_restores_libvirts_tables_exactly(lab, applied):
    backend, _desired = applied
    empty = backend.desired([])
    plan = backend.plan(backend.read(), empty)
    backend.test(plan)
    backend.apply(plan)
    assert lab.ruleset() == lab.baseline
    assert backend.read_back(empty).changed is False
    assert lab.probe('client', 'tcp', '203.0.113.10', 8080) in ('REFUSED', 'TIMEOUT')
