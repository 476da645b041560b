# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""_forward: ports, the validation of forwards with every error at once, hostile input (issue 11), and
the overlap rule, one table run through the module's check and the inventory's alike (issue 20)."""

from __future__ import annotations

import ipaddress
import random

import pytest

from ansible_collections.kvmnet.nat.plugins.module_utils import _forward
from ansible_collections.kvmnet.nat.plugins.module_utils import _inventory
from ansible_collections.kvmnet.nat.tests.support.rulesets import PUB, PUB6, fwd

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


# ---------------------------------------------------------------- ports


@pytest.mark.parametrize('value, expected', [
    (8080, _forward.PortRange(8080, 8080)),
    ('8080', _forward.PortRange(8080, 8080)),
    ('10000-10009', _forward.PortRange(10000, 10009)),
    ('10000:10009', _forward.PortRange(10000, 10009)),
    (' 1 - 65535 ', _forward.PortRange(1, 65535)),
])
def test_parse_ports_accepts(value, expected):
    assert _forward.parse_ports(value) == expected


@pytest.mark.parametrize('value, message', [
    (0, 'port 0 is out of range'),
    (65536, 'port 65536 is out of range'),
    ('10009-10000', 'range 10009-10000 is reversed'),
    ('http', "port 'http' is not a port"),
    (True, 'is not a number'),
    (None, 'is not a port'),
])
def test_parse_ports_refuses(value, message):
    with pytest.raises(ValueError) as exc:
        _forward.parse_ports(value)
    assert message in str(exc.value)


# ---------------------------------------------------------------- validation


BAD_INPUT = [
    # (forwards, module-level kwargs, expected fragment; each must name guest and port)
    ([fwd(guest_ip='192.168.122.300')], {}, "forward web01 tcp/8080: guest_ip '192.168.122.300' is not an IP address"),
    ([fwd(host_port=0)], {}, 'forward web01 tcp/0: host_port: port 0 is out of range 1-65535'),
    ([fwd(host_port=70000)], {}, 'forward web01 tcp/70000: host_port: port 70000 is out of range'),
    ([fwd(guest_port=65536)], {}, 'forward web01 tcp/8080: guest_port: port 65536 is out of range'),
    ([fwd(host_port='10000-10009', guest_port='20000-20004')], {},
     'forward web01 tcp/10000-10009: host range 10000-10009 has 10 ports but guest range 20000-20004 has 5'),
    ([fwd(host_port='10009-10000', guest_port='20009-20000')], {}, 'host_port: range 10009-10000 is reversed'),
    ([fwd(proto='icmp')], {}, "forward web01 icmp/8080: unknown proto 'icmp'"),
    ([fwd(sources=['198.51.100.0/33'])], {}, "forward web01 tcp/8080: source '198.51.100.0/33' is not an IP address or CIDR"),
    ([fwd(sources=['198.51.100.7/24'])], {}, 'source 198.51.100.7/24 has host bits set (did you mean 198.51.100.0/24?)'),
    ([fwd(), fwd(guest='web02', guest_ip='192.168.122.11')], {},
     'forward web01 tcp/8080->80 and forward web02 tcp/8080->80 claim the same tcp port(s) on 203.0.113.10'),
    ([fwd(host_port='10000-10009', guest_port='10000-10009'), fwd(guest='b', host_port=10005, guest_port=80)], {},
     'forward web01 tcp/10000-10009->10000-10009 and forward b tcp/10005->80 claim the same tcp port(s)'),
    ([fwd(guest_ip=PUB)], {}, 'forward web01 tcp/8080: guest_ip 203.0.113.10 is the public ip'),
    ([fwd()], {'public_ip': None}, 'forward web01 tcp/8080: no public_ip and no in_interface'),
    ([fwd(guest_ip='2001:db8:1::10')], {}, 'forward web01 tcp/8080: no public_ip6 and no in_interface'),
    ([fwd(public_ip='2001:db8::1')], {}, 'public_ip 2001:db8::1 and guest_ip 192.168.122.10 are of different IP versions'),
    ([fwd(masquerade='sometimes')], {}, "forward web01 tcp/8080: masquerade 'sometimes' must be one of auto, always, never"),
    ([fwd(guest='bad name')], {}, "forward #1 (guest 'bad name') tcp/8080: guest name 'bad name'"),
    ([fwd(guest_network='10.0.0.0/24')], {}, 'guest_network 10.0.0.0/24 does not contain guest_ip 192.168.122.10'),
    ([fwd(in_interface='eth0;rm')], {}, "in_interface 'eth0;rm' is not an interface name"),
    ([fwd()], {'public_ip': '203.0.113.999'}, "public_ip '203.0.113.999' is not an IP address"),
]


@pytest.mark.parametrize('forwards, kwargs, expected', BAD_INPUT)
def test_bad_input_is_refused_with_guest_and_port(forwards, kwargs, expected):
    args = dict(public_ip=PUB)
    args.update(kwargs)
    with pytest.raises(_forward.ForwardError) as exc:
        _forward.parse_forwards(forwards, **args)
    assert any(expected in err for err in exc.value.errors), exc.value.errors


def test_every_problem_is_reported_at_once():
    with pytest.raises(_forward.ForwardError) as exc:
        _forward.parse_forwards([fwd(host_port=0), fwd(guest='dns01', proto='icmp', host_port=53)], public_ip=PUB)
    assert len(exc.value.errors) == 2
    assert exc.value.errors[0].startswith('forward web01 tcp/0:')
    assert exc.value.errors[1].startswith('forward dns01 icmp/53:')


def test_same_port_on_different_public_ips_or_protocols_is_fine():
    result = _forward.parse_forwards([
        fwd(), fwd(guest='web02', guest_ip='192.168.122.11', public_ip='203.0.113.11'),
        fwd(guest='dns', guest_ip='192.168.122.12', proto='udp'),
    ], public_ip=PUB)
    assert sorted(f.guest for f in result) == ['dns', 'web01', 'web02']


def test_guest_port_defaults_to_host_port():
    (result,) = _forward.parse_forwards([dict(guest='a', guest_ip='192.168.122.5', host_port='10000-10001')], public_ip=PUB)
    assert result.guest_ports == _forward.PortRange(10000, 10001)


def test_overlap_sweep_finds_exactly_the_pairs_a_pairwise_check_finds():
    rng = random.Random(7)
    raw = []
    for i in range(300):
        first = rng.randrange(1000, 1400)
        size = rng.choice([1, 1, 1, 5, 20])
        item = {'guest': 'g%d' % i, 'guest_ip': '192.168.122.%d' % (10 + i % 200), 'proto': rng.choice(['tcp', 'udp']),
                'host_port': '%d-%d' % (first, first + size - 1) if size > 1 else first}
        if size > 1:
            item['guest_port'] = item['host_port']
        if rng.random() < 0.3:
            item['public_ip'] = rng.choice(['203.0.113.10', '203.0.113.11'])
        raw.append(item)
    with pytest.raises(_forward.ForwardError) as info:
        _forward.parse_forwards(raw, '203.0.113.10', None, None)
    forwards = [_forward.parse_forwards([r], '203.0.113.10', None, None)[0] for r in raw]
    expected = ['forward %s and forward %s claim the same %s port(s) on %s'
                % (a.label, b.label, a.proto, a.public_ip or b.public_ip or a.in_interface or b.in_interface)
                for i, a in enumerate(forwards) for b in forwards[i + 1:]
                if _forward.scopes_meet(a, b) and a.host_ports.overlaps(b.host_ports)]
    assert expected and info.value.errors == expected


# ---------------------------------------------------------------- hostile input (issue 11): injection through zone ids


def refused(forwards, **kwargs):
    args = dict(public_ip=PUB, public_ip6=PUB6)
    args.update(kwargs)
    with pytest.raises(_forward.ForwardError) as exc:
        _forward.parse_forwards(forwards, **args)
    return ' | '.join(exc.value.errors)


ZONE_IDS = [
    ({'public_ip6': '2001:db8::1%1\n-F\n#'}, [fwd(guest_ip='2001:db8:122::10')], "public_ip6 '2001:db8::1%1\\n-F\\n#' has a zone id"),
    ({}, [fwd(guest_ip='2001:db8:122::10', public_ip='2001:db8::1%eth0')], "public_ip '2001:db8::1%eth0' has a zone id"),
    ({}, [fwd(guest_ip='2001:db8:122::10%1\n-X')], 'has a zone id'),
    ({}, [fwd(guest_ip='2001:db8:122::10', sources=['2001:db8::%1/64'])], "source '2001:db8::%1/64' has a zone id"),
    ({}, [fwd(guest_ip='2001:db8:122::10', guest_network='2001:db8:122::%x\n-F/64')], 'guest_network'),
    ({}, [fwd(sources=['198.51.100.0/24\n-F'])], 'is not an IP address or CIDR'),
    ({'public_ip': '203.0.113.10\n-F'}, [fwd()], "public_ip '203.0.113.10\\n-F' is not an IP address"),
]


@pytest.mark.parametrize('kwargs, forwards, expected', ZONE_IDS)
def test_zone_ids_and_newlines_in_addresses_are_refused(kwargs, forwards, expected):
    assert expected in refused(forwards, **kwargs)


# ---------------------------------------------------------------- hostile input (issue 11): a forward that exposes the host itself


HOST = [(ipaddress.ip_interface('192.168.122.1/24'), 'virbr0'), (ipaddress.ip_interface('203.0.113.10/24'), 'eth0'),
        (ipaddress.ip_interface('2001:db8:122::1/64'), 'virbr0'), (ipaddress.ip_interface('10.0.0.5/8'), 'eth1')]


@pytest.mark.parametrize('raw, expected', [
    (fwd(guest_ip='192.168.122.1'), 'guest_ip 192.168.122.1 is an address of this host (on virbr0)'),
    (fwd(guest_ip='10.0.0.5'), 'guest_ip 10.0.0.5 is an address of this host (on eth1)'),
    (fwd(guest_ip='192.168.122.255'), 'guest_ip 192.168.122.255 is the broadcast address of 192.168.122.0/24 (on virbr0)'),
    (fwd(guest_ip='192.168.122.0'), 'guest_ip 192.168.122.0 is the network address of 192.168.122.0/24 (on virbr0)'),
    (fwd(guest_ip='2001:db8:122::1'), 'guest_ip 2001:db8:122::1 is an address of this host (on virbr0)'),
    (fwd(guest_ip='2001:db8:122::'), 'guest_ip 2001:db8:122:: is the network address of 2001:db8:122::/64'),
])
def test_guest_addresses_of_the_host_are_refused(raw, expected):
    forwards = _forward.parse_forwards([raw], public_ip=PUB, public_ip6=PUB6)
    errors, _warnings = _forward.host_address_problems(forwards, HOST)
    assert any(expected in error for error in errors), errors


@pytest.mark.parametrize('guest_ip, expected', [
    ('255.255.255.255', 'is the broadcast address'),
    ('224.0.0.1', 'is a multicast address'),
    ('127.0.0.1', 'is a loopback address'),
    ('0.0.0.0', 'is the unspecified address'),
    ('169.254.1.1', 'is a link-local address'),
    ('fe80::1', 'is a link-local address'),
    ('ff02::1', 'is a multicast address'),
])
def test_addresses_no_guest_can_have_are_refused_without_a_host(guest_ip, expected):
    assert 'guest_ip %s %s' % (guest_ip, expected) in refused([fwd(guest_ip=guest_ip)])


def test_the_broadcast_address_of_a_declared_guest_network_is_refused():
    assert 'guest_ip 10.1.1.255 is the broadcast address of 10.1.1.0/24' in refused(
        [fwd(guest_ip='10.1.1.255', guest_network='10.1.1.0/24')])


def test_a_guest_in_the_host_networks_is_fine():
    forwards = _forward.parse_forwards([fwd()], public_ip=PUB)
    assert _forward.host_address_problems(forwards, HOST) == ([], [])


# ---------------------------------------------------------------- hostile input (issue 11): public addresses that make no sense


@pytest.mark.parametrize('kwargs, raw, expected', [
    ({'public_ip': '127.0.0.1'}, fwd(), 'public_ip 127.0.0.1 is a loopback address'),
    ({'public_ip': '0.0.0.0'}, fwd(), 'public_ip 0.0.0.0 is the unspecified address'),
    ({'public_ip': '224.0.0.5'}, fwd(), 'public_ip 224.0.0.5 is a multicast address'),
    ({'public_ip': '255.255.255.255'}, fwd(), 'public_ip 255.255.255.255 is the broadcast address'),
    ({'public_ip6': '::1'}, fwd(guest_ip='2001:db8:122::10'), 'public_ip6 ::1 is a loopback address'),
    ({'public_ip6': 'fe80::1'}, fwd(guest_ip='2001:db8:122::10'), 'public_ip6 fe80::1 is a link-local address'),
    ({}, fwd(public_ip='127.0.0.2'), 'public_ip 127.0.0.2 is a loopback address'),
])
def test_public_addresses_that_make_no_sense_are_refused(kwargs, raw, expected):
    args = dict(public_ip=PUB, public_ip6=PUB6)
    args.update(kwargs)
    with pytest.raises(_forward.ForwardError) as exc:
        _forward.parse_forwards([raw], **args)
    assert any(expected in error for error in exc.value.errors), exc.value.errors


def test_a_public_address_of_a_connected_networks_broadcast_is_refused_and_a_foreign_one_too():
    forwards = _forward.parse_forwards([fwd(public_ip='203.0.113.255'), fwd(host_port=81, public_ip='198.51.100.9')])
    errors, warnings = _forward.host_address_problems(forwards, HOST)
    assert any('public_ip 203.0.113.255 is the network or broadcast address of 203.0.113.0/24' in e for e in errors)
    assert [e for e in errors if e.startswith('public_ip 198.51.100.9 is not an address of this host')] != []
    assert warnings == []


# ---------------------------------------------------------------- hostile input (issue 11): inputs that never converged


@pytest.mark.parametrize('raw, expected', [
    (fwd(sources=['0.0.0.0/0']), 'source 0.0.0.0/0 is every address; leave sources empty'),
    (fwd(guest_ip='2001:db8:122::10', sources=['::/0']), 'source ::/0 is every address'),
    (fwd(guest_network='0.0.0.0/0'), 'guest_network 0.0.0.0/0 is every address'),
    (fwd(guest_ip='::ffff:192.168.122.10'), 'guest_ip ::ffff:192.168.122.10 is an IPv4-mapped IPv6 address; use 192.168.122.10'),
    (fwd(guest_ip='2001:db8:122::10', sources=['::ffff:198.51.100.0/120']), 'is an IPv4-mapped IPv6 network'),
    (fwd(guest_ip='2001:db8:122::10', public_ip='::ffff:203.0.113.10'), 'is an IPv4-mapped IPv6 address'),
])
def test_inputs_iptables_save_prints_differently_are_refused(raw, expected):
    assert expected in refused([raw])


# ---------------------------------------------------------------- hostile input (issue 11): trailing newlines and other characters


@pytest.mark.parametrize('raw, kwargs, expected', [
    (fwd(guest='g1\n'), {}, "guest name 'g1\\n'"),
    (fwd(in_interface='pub\n'), {}, "in_interface 'pub\\n' is not an interface name"),
    (fwd(in_interface='eth0.1234567890a'), {}, 'is not an interface name'),      # 16 characters
    (fwd(in_interface='eth/0'), {}, 'is not an interface name'),
    (fwd(in_interface='eth:0'), {}, 'is not an interface name'),
    (fwd(in_interface='..'), {}, 'is not an interface name'),
    (fwd(in_interface='eth 0'), {}, 'is not an interface name'),
    (fwd(), {'in_interface': 'eth0\n'}, "in_interface 'eth0\\n' is not an interface name"),
    (fwd(host_port='８０８０'), {}, "host_port: port '８０８０' is not a port"),
    (fwd(host_port='٨٠'), {}, 'is not a port'),
    (fwd(host_port='80\n'), {}, 'is not a port'),
    (fwd(guest_port='80\t'), {}, 'is not a port'),
    (fwd(proto='tcp\n'), {}, "unknown proto 'tcp\\n'"),
    (fwd(masquerade='auto\n'), {}, "masquerade 'auto\\n'"),
])
def test_strings_are_matched_whole_and_ascii(raw, kwargs, expected):
    assert expected in refused([raw], **kwargs)


@pytest.mark.parametrize('name, ok', [('eth0', True), ('eth+', True), ('br-lan.10', True), ('a' * 15, True),
                                      ('a' * 14 + '+', True), ('a' * 16, False), ('+', False), ('.', False),
                                      ('eth0+x', False), ('éth0', False)])
def test_interface_names(name, ok):
    assert _forward.valid_interface(name) is ok


# ---------------------------------------------------------------- vip_addresses (issue 19)


@pytest.mark.parametrize('values, expected', [
    (None, (set(), [])),
    ([], (set(), [])),
    (['203.0.113.99', '2001:db8::99'], ({_forward.parse_address('203.0.113.99', 'x'), _forward.parse_address('2001:db8::99', 'x')}, [])),
    (['224.0.0.1'], (set(), ['vip_addresses 224.0.0.1 is a multicast address'])),
    (['203.0.113.99%eth0'], (set(), ["vip_addresses '203.0.113.99%eth0' has a zone id (\"%...\"); kvmnet.nat takes no "
                                     "scoped addresses"])),
    ('203.0.113.99', (set(), ["vip_addresses must be a list of addresses, not '203.0.113.99'"])),
])
def test_parse_vip_addresses(values, expected):
    assert _forward.parse_vip_addresses(values) == expected
