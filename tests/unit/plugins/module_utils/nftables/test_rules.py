# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""plugins/module_utils/nftables/rules.py: our table rendered from validated forwards. No root, no host."""

from __future__ import annotations

import dataclasses
import ipaddress

import pytest

from ansible_collections.kvmnet.nat.plugins.module_utils import _forward as F
from ansible_collections.kvmnet.nat.plugins.module_utils.nftables import rules as R
from ansible_collections.kvmnet.nat.tests.support import nftsets
from ansible_collections.kvmnet.nat.tests.support.rulesets import PUB, PUB6, example_forwards, fwd

DNAT4 = 'ip daddr . meta l4proto . th dport'
SRC4 = DNAT4 + ' . ip saddr'
HAIRPIN4 = 'hairpin4_' + R.net_tag(ipaddress.ip_network('192.168.122.0/24'))


def table_of(*raw, **defaults):
    defaults.setdefault('public_ip', PUB)
    return R.desired_state(F.parse_forwards(list(raw), **defaults)).table


@pytest.mark.parametrize('prefix, name', [('KVMNAT', 'kvmnet_nat'), ('TEST1', 'kvmnet_nat_test1'), ('A', 'kvmnet_nat_a')])
def test_table_name_from_the_prefix(prefix, name):
    assert R.table_name(prefix) == name and R.valid_table(name)


@pytest.mark.parametrize('prefix', ['kvmnat', 'KVM-NAT', '', None, 'X' * 17, '1ABC', 'KVMNAT\n'])
def test_a_prefix_iptables_refuses_is_refused(prefix):
    with pytest.raises(ValueError):
        R.table_name(prefix)


def test_the_issue_example():
    table = R.desired_state(example_forwards()).table
    lines = table.lines()
    assert 'map port4 element 203.0.113.10 . tcp . 8080 : 192.168.122.10 . 80' in lines
    assert 'map port4 element 203.0.113.10 . udp . 5353 : 192.168.122.11 . 53' in lines
    # the shifted range: one element per port (nft has no /base offset)
    assert [line for line in lines if '192.168.122.12' in line] == [
        'map port4 element 203.0.113.10 . tcp . %d : 192.168.122.12 . %d' % (10000 + i, 20000 + i) for i in range(10)]
    assert 'set masq4 element 203.0.113.10 . tcp . 8443' in lines                          # masquerade always
    assert 'set %s element 203.0.113.10 . tcp . 8080' % HAIRPIN4 in lines                # auto with its network
    # the forward with sources: an element per source network, the source the key's last part; no chain
    assert not [name for name in table.chains if name.startswith('f_')]
    assert 'map srcport4_r element 203.0.113.10 . tcp . 2222 . 198.51.100.0/24 : 192.168.122.10 . 22' in lines
    assert table.chains['dispatch'].rules == (
        'ip saddr 192.168.122.0/24 %s @%s ct mark set ct mark | 0x00400000' % (DNAT4, HAIRPIN4),
        DNAT4 + ' @masq4 ct mark set ct mark | 0x00400000',
        DNAT4 + ' @port4 ct mark set ct mark | 0x00200000 dnat ip to %s map @port4' % DNAT4,
        'meta l4proto { tcp, udp, sctp } %s @srcport4_r ct mark set ct mark | 0x00200000 dnat ip to %s map @srcport4_r'
        % (SRC4, SRC4),
    )
    assert table.chains['prerouting'] == R.Chain(R.BASE_CHAINS['prerouting'], ('jump dispatch',))
    # host-local access: nat output, numeric priority, local destinations only
    assert table.chains['output'] == R.Chain('type nat hook output priority -100; policy accept;',
                                             ('fib daddr type local jump dispatch',))
    # masquerade needs both marks: a key marked for masquerade whose sources did not match is no DNAT of ours
    assert table.chains['postrouting'].rules == ('ct mark & 0x00600000 == 0x00600000 masquerade',)


@pytest.mark.parametrize('mode, network, masq, hairpin, postrouting', [
    ('auto', None, False, False, False),
    ('auto', '192.168.122.0/24', False, True, True),
    ('always', None, True, False, True),
    ('always', '192.168.122.0/24', True, False, True),
    ('never', '192.168.122.0/24', False, False, False),
])
def test_masquerade_modes_of_a_plain_forward(mode, network, masq, hairpin, postrouting):
    table = table_of(fwd(masquerade=mode, guest_network=network))
    assert ('masq4' in table.sets, HAIRPIN4 in table.sets) == (masq, hairpin)
    assert bool(table.chains['postrouting'].rules) == postrouting
    if hairpin:
        assert table.sets[HAIRPIN4].elements == ('203.0.113.10 . tcp . 8080',)
        assert not table.sets[HAIRPIN4].interval


@pytest.mark.parametrize('mode, network, masq, hairpin', [
    ('auto', None, False, False),
    ('auto', '192.168.122.0/24', False, True),
    ('always', None, True, False),
    ('never', '192.168.122.0/24', False, False),
])
def test_masquerade_modes_of_a_forward_with_sources(mode, network, masq, hairpin):
    table = table_of(fwd(masquerade=mode, guest_network=network, sources=['198.51.100.0/24']))
    assert not [n for n in table.chains if n.startswith('f_')]
    assert table.sets['srcport4_r'].elements == ('203.0.113.10 . tcp . 8080 . 198.51.100.0/24 : 192.168.122.10 . 80',)
    assert ('masq4' in table.sets, HAIRPIN4 in table.sets) == (masq, hairpin)
    assert bool(table.chains['postrouting'].rules) == (masq or hairpin)


def test_two_guest_networks_never_share_a_hairpin_set():
    table = table_of(fwd(guest_network='192.168.122.0/24'),
                     fwd(guest='web02', guest_ip='192.168.123.10', host_port=8081, guest_network='192.168.123.0/24'))
    assert sorted(name for name in table.sets if name.startswith('hairpin4_')) == ['hairpin4_c0a87a_24', 'hairpin4_c0a87b_24']


@pytest.mark.parametrize('sources, where, elements', [
    (['198.51.100.0/24'], 'srcport4_r', ['203.0.113.10 . tcp . 8080 . 198.51.100.0/24 : 192.168.122.10 . 80']),
    # one address: an exact key, the hash map
    (['198.51.100.7'], 'srcport4', ['203.0.113.10 . tcp . 8080 . 198.51.100.7 : 192.168.122.10 . 80']),
    # overlapping and adjacent sources are collapsed, as nft would merge them
    (['198.51.100.7/32', '198.51.100.0/24', '192.0.2.0/25', '192.0.2.128/25'], 'srcport4_r',
     ['203.0.113.10 . tcp . 8080 . 192.0.2.0/24 : 192.168.122.10 . 80',
      '203.0.113.10 . tcp . 8080 . 198.51.100.0/24 : 192.168.122.10 . 80']),
])
def test_sources(sources, where, elements):
    table = table_of(fwd(sources=sources))
    assert list(table.sets[where].elements) == elements
    assert table.sets[where].interval == where.endswith('_r')
    assert table.sets[where].key == ('ipv4_addr', 'inet_proto', 'inet_service', 'ipv4_addr')


def test_exact_keys_go_to_hash_sets_and_ranges_or_networks_to_interval_sets():
    table = table_of(fwd(masquerade='always'), fwd(guest='web02', host_port='9000-9009', guest_port=None, masquerade='always'),
                     fwd(guest='web03', host_port='7000-7001', guest_port=None, sources=['198.51.100.7']))
    assert (table.sets['masq4'].elements, table.sets['masq4'].interval) == (('203.0.113.10 . tcp . 8080',), False)
    assert (table.sets['masq4_r'].elements, table.sets['masq4_r'].interval) == (('203.0.113.10 . tcp . 9000-9009',), True)
    # a range kept as it is: always an interval map, with or without sources
    assert table.sets['addr4'].interval and table.sets['srcaddr4'].interval
    assert table.sets['srcaddr4'].elements == ('203.0.113.10 . tcp . 7000-7001 . 198.51.100.7 : 192.168.122.10',)


def test_in_interface_with_and_without_a_public_address():
    table = R.desired_state(F.parse_forwards(nftsets.IFACE_ONLY) + F.parse_forwards(
        [fwd(host_port='7000-7009', guest_port=None, in_interface='eth0'),
         fwd(guest='web02', guest_ip='192.168.122.14', host_port=7005, guest_port=None, in_interface='eth1')], public_ip=PUB)).table
    chains = {name: chain.rules for name, chain in table.chains.items() if name.startswith('f_')}
    # one port claimed on two interfaces: the range is cut, 7005 leads to a chain with both forwards
    special = sorted((e.split(' : jump ') for e in table.sets['special4'].elements + table.sets['special4_r'].elements),
                     key=lambda e: e[0])
    assert [key for key, _c in special] == ['203.0.113.10 . tcp . 7000-7004', '203.0.113.10 . tcp . 7005',
                                            '203.0.113.10 . tcp . 7006-7009']
    assert special[0][1] == special[2][1] and len(chains[special[1][1]]) == 2
    assert not table.sets['special4'].interval and table.sets['special4_r'].interval
    # without a public address: keyed by inbound interface, per family; a wildcard gets its own map
    assert table.sets['iface4'].key == ('ifname', 'inet_proto', 'inet_service')
    assert [e.split(' : ')[0] for e in table.sets['iface4'].elements] == ['"eth1" . tcp . 6000']
    assert [e.split(' : ')[0] for e in table.sets['iface6'].elements] == ['"eth1" . tcp . 6000']
    assert 'meta nfproto ipv4 iifname . meta l4proto . th dport vmap @iface4' in table.chains['dispatch'].rules
    wild = [r for r in table.chains['dispatch'].rules if 'iifname "vnet*"' in r]
    assert wild == ['meta nfproto ipv4 iifname "vnet*" meta l4proto . th dport vmap @wild4_1']
    assert any(r.startswith('iifname "vnet*" meta l4proto udp ip saddr 192.168.122.0/24 ') for rs in chains.values() for r in rs)


@pytest.mark.parametrize('host, guest, where, element', [
    (8080, 80, 'port4', '203.0.113.10 . tcp . 8080 : 192.168.122.10 . 80'),
    ('8000-8009', None, 'addr4', '203.0.113.10 . tcp . 8000-8009 : 192.168.122.10'),   # ports kept as they are
    ('8000-8001', '9000-9001', 'port4', '203.0.113.10 . tcp . 8001 : 192.168.122.10 . 9001'),
])
def test_port_ranges_of_plain_forwards(host, guest, where, element):
    table = table_of(fwd(host_port=host, guest_port=guest))
    assert element in table.sets[where].elements
    assert table.sets[where].interval == (where == 'addr4')


def test_a_shifted_range_with_sources_maps_each_port():
    table = table_of(fwd(host_port='8000-8002', guest_port='9000-9002', sources=['198.51.100.0/24']))
    assert table.sets['srcport4_r'].elements == tuple(
        '203.0.113.10 . tcp . %d . 198.51.100.0/24 : 192.168.122.10 . %d' % (8000 + i, 9000 + i) for i in range(3))


def test_both_families_in_one_table():
    table = R.desired_state(nftsets.all_forwards()).table
    hairpin6 = 'hairpin6_' + R.net_tag(ipaddress.ip_network('2001:db8:122::/64'))
    assert {'port4', 'port6', 'special4', 'srcport6', 'srcport6_r', HAIRPIN4, hairpin6} <= set(table.sets)
    assert table.sets['port6'].elements == ('2001:db8::10 . tcp . 8080 : 2001:db8:122::10 . 80',)
    assert table.sets[hairpin6].elements == ('2001:db8::10 . tcp . 8080',)
    assert 'ip6 saddr 2001:db8:122::/64 ip6 daddr . meta l4proto . th dport @%s ct mark set ct mark | 0x00400000' \
        % hairpin6 in table.chains['dispatch'].rules
    assert {e.split(' : ')[0].rsplit(' . ', 1)[1] for e in table.sets['srcport6_r'].elements + table.sets['srcport6'].elements} \
        == {'2001:db8:5::/48', '2001:db8:6::1'}
    assert table.script().startswith('table inet kvmnet_nat {\n')


def test_no_forwards_no_table():
    desired = R.desired_state([])
    assert desired.empty and desired.table is None and desired.accept is None


def test_the_accept_rule():
    assert R.desired_state(example_forwards()).accept == \
        'ct mark & 0x00200000 == 0x00200000 counter accept comment "kvmnet.nat: accept"'
    assert R.ACCEPT_MARK & R.MASQ_MARK == 0 and bin(R.ACCEPT_MARK).count('1') == 1


@pytest.mark.parametrize('items, expected', [
    ([((1, 5), 'a')], [((1, 5), ('a',))]),
    ([((1, 5), 'a'), ((3, 3), 'b')], [((1, 2), ('a',)), ((3, 3), ('a', 'b')), ((4, 5), ('a',))]),
    ([((1, 2), 'a'), ((5, 6), 'b')], [((1, 2), ('a',)), ((5, 6), ('b',))]),
    ([((1, 4), 'a'), ((3, 8), 'b')], [((1, 2), ('a',)), ((3, 4), ('a', 'b')), ((5, 8), ('b',))]),
])
def test_segments(items, expected):
    got = R.segments([(F.PortRange(*span), m) for span, m in items])
    assert [((s.first, s.last), m) for s, m in got] == expected


HOSTILE = ['web"01', 'web01\nflush ruleset', 'web01; delete table ip libvirt_network', "web'01", 'web01 }']


@pytest.mark.parametrize('name', HOSTILE)
def test_hostile_guest_names_are_refused_before_and_by_the_renderer(name):
    with pytest.raises(F.ForwardError):
        F.parse_forwards([fwd(guest=name)], public_ip=PUB)
    # a forward with a chain of its own: its label is the rule's comment
    forged = dataclasses.replace(F.parse_forwards([fwd(sources=['198.51.100.0/24'], in_interface='eth0')],
                                                  public_ip=PUB)[0], guest=name)
    with pytest.raises(ValueError):
        R.desired_state([forged])


@pytest.mark.parametrize('name', ['eth0"', 'eth0 ', 'eth\n0', 'eth*', 'a' * 16, '..'])
def test_hostile_interface_names_are_refused(name):
    with pytest.raises(ValueError):
        R.iface(name)


def test_everything_in_the_script_comes_from_parsed_values():
    forged = dataclasses.replace(F.parse_forwards([fwd()], public_ip=PUB)[0], proto='tcp accept')
    with pytest.raises(ValueError):
        R.desired_state([forged])
    assert R.addr(ipaddress.ip_address('2001:0db8::0010')) == '2001:db8::10'
    assert R.net(ipaddress.ip_network(PUB6 + '/128')) == PUB6
