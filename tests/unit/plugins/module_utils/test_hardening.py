# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Hostile and nonsensical input, one table per class of defect (issue 11). No root, no host."""

from __future__ import annotations

import ipaddress
import random
import time

import pytest

from ansible_collections.kvmnet.nat.plugins.module_utils import _backend as B
from ansible_collections.kvmnet.nat.plugins.module_utils import _forward as F
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables import grammar as G
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables import persisted as K
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables import plan as P
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables import rules as R
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables import save as S
from ansible_collections.kvmnet.nat.tests.unit.plugins.module_utils import rulewalk

PUB = '203.0.113.10'
PUB6 = '2001:db8::10'


def fwd(**kw):
    base = dict(guest='web01', guest_ip='192.168.122.10', host_port=8080, guest_port=80)
    base.update(kw)
    return base


def as_live(text):
    """A restore file or payload as iptables-save would print the result of applying it to nothing."""
    lines = []
    for line in text.splitlines():
        if line.startswith('-I '):
            _i, chain, _one, spec = line.split(' ', 3)
            line = '-A %s %s' % (chain, spec)
        lines.append(line)
    return S.parse_save('\n'.join(lines) + '\n')


def refused(forwards, **kwargs):
    args = dict(public_ip=PUB, public_ip6=PUB6)
    args.update(kwargs)
    with pytest.raises(F.ForwardError) as exc:
        F.parse_forwards(forwards, **args)
    return ' | '.join(exc.value.errors)


# ---------------------------------------------------------------- 1. injection through zone ids

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


@pytest.mark.parametrize('text, rendered', [
    ('2001:DB8::1', '2001:db8::1/128'),
    ('2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1/128'),
    ('2001:0db8::0001', '2001:db8::1/128'),
    ('::1.2.3.4', '::1.2.3.4/128'),          # what iptables (inet_ntop) prints, not Python's ::102:304
    ('2001:db8::', '2001:db8::/128'),
])
def test_addresses_are_rendered_from_their_parsed_value_as_iptables_prints_them(text, rendered):
    assert R._addr(F.parse_address(text, 'x')) == rendered


# ---------------------------------------------------------------- the payload grammar

def _desired():
    dns = fwd(guest='dns', guest_ip='192.168.122.11', proto='udp', host_port=53, guest_port=53,
              sources=['198.51.100.0/24'], masquerade='always')
    forwards = F.parse_forwards([fwd(), dns], public_ip=PUB)
    return R.desired_state(forwards, 4)


def test_every_line_the_engine_writes_passes_its_grammar():
    desired = _desired()
    G.check_payload(P.plan({}, desired).payload, 'KVMNAT')
    G.check_payload(K.persist_text(desired, 'nft'), 'KVMNAT', comments=True)
    G.check_payload(P.plan(as_live(K.persist_text(desired, 'nft')),
                           R.desired_state([], 4)).payload, 'KVMNAT')


GOOD_RULE = ('-d 203.0.113.10/32 -p tcp -m tcp --dport 8080 -m comment --comment "kvmnet.nat: web01 tcp/8080->80" '
             '-j DNAT --to-destination 192.168.122.10:80')


@pytest.mark.parametrize('line', [
    '-F',
    '-F KVMNAT_DNAT',
    '-X LIBVIRT_FWI',
    ':INPUT DROP [0:0]',
    ':LIBVIRT_PRT - [0:0]',
    '-P FORWARD ACCEPT',
    '-A LIBVIRT_PRT ' + GOOD_RULE,                                  # not our chain
    '-A KVMNAT_FWD ' + GOOD_RULE,                                   # our chain, other table
    '-A KVMNAT_DNAT -j ACCEPT',                                     # no comment
    '-A KVMNAT_DNAT ' + GOOD_RULE.replace('-d 203.0.113.10/32', '-d 203.0.113.10%1/32'),
    '-A KVMNAT_DNAT ' + GOOD_RULE.replace('192.168.122.10:80', '192.168.122.10:80 -j ACCEPT'),
    '-A KVMNAT_DNAT ' + GOOD_RULE.replace('--dport 8080', '--dport ８０８０'),
    '-A KVMNAT_DNAT ' + GOOD_RULE + '\r',
    '-A KVMNAT_DNAT ' + GOOD_RULE.replace('-p tcp', '-p tcp -m state --state NEW'),
    '-A KVMNAT_DNAT ' + GOOD_RULE.replace('web01', 'web01" -j ACCEPT "'),
    '-A KVMNAT_DNAT ' + GOOD_RULE.replace('-d 203.0.113.10/32', '-d 0.0.0.0/0'),
    '-D PREROUTING -j KVMNAT_DNAT',                                 # not exactly our jump
    '-D FORWARD -j LIBVIRT_FWX',
    '-I PREROUTING 2 -m comment --comment "kvmnet.nat: jump" -j KVMNAT_DNAT',
    '-I INPUT 1 -m comment --comment "kvmnet.nat: jump" -j KVMNAT_DNAT',
    '# a comment',
    '*filter',
])
def test_grammar_refuses_every_line_the_engine_does_not_write(line):
    with pytest.raises(G.PayloadError):
        G.check_payload('*nat\n%s\nCOMMIT\n' % line, 'KVMNAT')


def test_grammar_accepts_the_good_rule_in_its_table():
    G.check_payload('*nat\n:KVMNAT_DNAT - [0:0]\n-A KVMNAT_DNAT %s\nCOMMIT\n' % GOOD_RULE, 'KVMNAT')


# ---------------------------------------------------------------- 2. hairpin behind the dispatch tree

def _packets(forward, rng):
    """A new connection from outside and one from inside the guest's network, as POSTROUTING sees them."""
    port = rng.randint(forward.host_ports.first, forward.host_ports.last)
    guest_port = forward.guest_ports.first + (port - forward.host_ports.first)
    common = dict(proto=forward.proto, dst=str(forward.guest_ip), dport=guest_port, states=('NEW', 'DNAT'),
                  origdst=str(forward.public_ip), origdstport=port, replsrc=str(forward.guest_ip))
    inside = str(forward.guest_network.network_address + 200) if forward.guest_network else '192.168.122.200'
    return [dict(common, src='198.51.100.7'), dict(common, src=inside)]


def _random_forwards(rng, count):
    networks = ['192.168.122.0/24', '192.168.100.0/24', '10.10.0.0/16']
    raws = []
    ports = rng.sample(range(1000, 3000), count)
    for i, port in enumerate(ports):
        net = rng.choice(networks)
        base = ipaddress.ip_network(net)
        raws.append(dict(guest='g%d' % i, guest_ip=str(base.network_address + 10 + i), host_port=port,
                         guest_port=rng.choice([80, 443, port]), proto=rng.choice(['tcp', 'udp']),
                         masquerade=rng.choice(['auto', 'always', 'always', 'never']), guest_network=net,
                         public_ip=rng.choice([PUB, '203.0.113.11'])))
    return F.parse_forwards(raws)


def test_tree_and_flat_chains_masquerade_the_same_connections():
    """Mixed masquerade modes, both protocols, three guest networks: every connection meets the
    MASQUERADE (or none) the flat chain would give it. Fails when a tree of 'always' rules is
    entered with -g ahead of the hairpin rules (the packet never comes back)."""
    rng = random.Random(11)
    for _round in range(60):
        forwards = _random_forwards(rng, rng.randint(9, 70))
        desired = R.desired_state(forwards, 4)
        chains = rulewalk.by_name(desired.chains)
        flat = {'FLAT': [rule for f in forwards for rule in R.render_masquerade(f)]}
        for forward in forwards:
            for packet in _packets(forward, rng):
                assert rulewalk.walk(chains, 'KVMNAT_SNAT', packet) == rulewalk.walk(flat, 'FLAT', packet), \
                    (forward.label, packet)


def test_the_issue_layout_keeps_hairpin():
    """More than 8 'always' forwards sorted before an 'auto' one (issue 11, defect 2)."""
    raws = [fwd(guest='a%d' % i, guest_ip='192.168.122.%d' % (20 + i), host_port=1000 + i, masquerade='always')
            for i in range(12)]
    raws.append(fwd(guest='web01', host_port=1005 + 100, guest_network='192.168.122.0/24'))
    raws.append(fwd(guest='late', guest_ip='192.168.122.99', host_port=1006, public_ip='203.0.113.11',
                    guest_network='192.168.122.0/24'))
    forwards = F.parse_forwards(raws, public_ip=PUB)
    chains = rulewalk.by_name(R.desired_state(forwards, 4).chains)
    late = next(f for f in forwards if f.guest == 'late')
    hairpin = dict(proto='tcp', src='192.168.122.50', dst='192.168.122.99', dport=80, states=('NEW', 'DNAT'),
                   origdst='203.0.113.11', origdstport=1006)
    rule = rulewalk.walk(chains, 'KVMNAT_SNAT', hairpin)
    assert rule is not None and 'late tcp/1006->80 hairpin' in rule and rule.endswith('-j MASQUERADE')
    assert late.masquerade == 'auto'


def test_dnat_and_forward_trees_agree_with_flat_chains():
    rng = random.Random(3)
    for _round in range(30):
        forwards = _random_forwards(rng, rng.randint(9, 60))
        desired = R.desired_state(forwards, 4)
        chains = rulewalk.by_name(desired.chains)
        flat_dnat = {'FLAT': [rule for f in forwards for rule in R.render_dnat(f)]}
        flat_fwd = {'FLAT': [R.render_accept(f) for f in forwards]}
        for forward in forwards:
            outside = _packets(forward, rng)[0]
            before_dnat = dict(outside, dst=outside['origdst'], dport=outside['origdstport'], states=('NEW',))
            assert rulewalk.walk(chains, 'KVMNAT_DNAT', before_dnat) == rulewalk.walk(flat_dnat, 'FLAT', before_dnat)
            accepted = rulewalk.walk(chains, 'KVMNAT_FWD', outside)
            assert accepted == rulewalk.walk(flat_fwd, 'FLAT', outside) and accepted is not None


# ---------------------------------------------------------------- 3. a forward that exposes the host itself

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
    forwards = F.parse_forwards([raw], public_ip=PUB, public_ip6=PUB6)
    errors, _warnings = F.host_address_problems(forwards, HOST)
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
    forwards = F.parse_forwards([fwd()], public_ip=PUB)
    assert F.host_address_problems(forwards, HOST) == ([], [])


# ---------------------------------------------------------------- 4. public addresses that make no sense

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
    with pytest.raises(F.ForwardError) as exc:
        F.parse_forwards([raw], **args)
    assert any(expected in error for error in exc.value.errors), exc.value.errors


def test_a_public_address_of_a_connected_networks_broadcast_is_refused_and_a_foreign_one_too():
    forwards = F.parse_forwards([fwd(public_ip='203.0.113.255'), fwd(host_port=81, public_ip='198.51.100.9')])
    errors, warnings = F.host_address_problems(forwards, HOST)
    assert any('public_ip 203.0.113.255 is the network or broadcast address of 203.0.113.0/24' in e for e in errors)
    assert [e for e in errors if e.startswith('public_ip 198.51.100.9 is not an address of this host')] != []
    assert warnings == []


# ---------------------------------------------------------------- 6. inputs that never converged

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


def test_a_plan_of_what_was_applied_is_empty():
    """The saved form is the rendered form: render, take it as the live ruleset, plan again."""
    forwards = F.parse_forwards([
        fwd(guest_ip='2001:db8:0:0:1:0:0:10', host_port='10000:10009', guest_port='10000-10009',
            sources=['2001:DB8:1::/48']),
        fwd(guest='b', guest_ip='192.168.122.11', sources=['198.51.100.7'], host_port=1),
    ], public_ip=PUB, public_ip6='2001:db8:0::10')
    for family in (4, 6):
        desired = R.desired_state(forwards, family)
        live = as_live(K.persist_text(desired, 'nft'))
        again = P.plan(live, desired)
        assert (again.changed, again.reasons) == (False, [])


# ---------------------------------------------------------------- 7. trailing newlines and other characters

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


@pytest.mark.parametrize('prefix, ok', [('KVMNAT', True), ('KVMNAT\n', False), ('KVM NAT', False), ('ＫＶＭ', False),
                                        ('K' * 16, True), ('K' * 17, False)])
def test_chain_prefix_is_matched_whole(prefix, ok):
    assert R.valid_prefix(prefix) is ok


@pytest.mark.parametrize('name, ok', [('eth0', True), ('eth+', True), ('br-lan.10', True), ('a' * 15, True),
                                      ('a' * 14 + '+', True), ('a' * 16, False), ('+', False), ('.', False),
                                      ('eth0+x', False), ('éth0', False)])
def test_interface_names(name, ok):
    assert F.valid_interface(name) is ok


# ---------------------------------------------------------------- 12. an admin's jump into our chains

@pytest.mark.parametrize('table, chain, spec', [
    ('nat', 'PREROUTING', '-j KVMNAT_DNAT'),
    ('nat', 'PREROUTING', '-i eth0 -m comment --comment "kvmnet.nat: jump" -j KVMNAT_DNAT'),
    ('nat', 'INPUT', '-m comment --comment "kvmnet.nat: jump" -j KVMNAT_DNAT'),
    ('filter', 'FORWARD', '-g KVMNAT_FWD'),
    ('filter', 'OUTPUT', '-m comment --comment "kvmnet.nat: jump" -j KVMNAT_FWD'),
    ('nat', 'POSTROUTING', '-s 10.0.0.0/8 -j KVMNAT_SNAT'),
])
def test_a_jump_into_our_chains_that_is_not_ours_is_refused_and_named(table, chain, spec):
    desired = _desired()
    live = as_live(K.persist_text(desired, 'nft'))
    live.setdefault(table, S.Table(table)).rules.setdefault(chain, []).append(spec)
    with pytest.raises(B.RulesetError) as exc:
        P.plan(live, desired)
    assert 'rule "-A %s %s" in table %s jumps into a kvmnet.nat chain but is not kvmnet.nat\'s own jump' \
        % (chain, spec, table) in str(exc.value)


def test_a_chain_of_our_name_in_another_table_is_not_ours():
    live = S.parse_save('*nat\n:KVMNAT_FWD - [0:0]\n-A PREROUTING -j KVMNAT_FWD\nCOMMIT\n')
    result = P.plan(live, _desired())
    assert ':KVMNAT_FWD' not in result.payload.split('*nat')[1]     # left alone in nat


# ---------------------------------------------------------------- fuzz: every string parameter

ALPHABET = (['a', 'Z', '0', '9', '.', ':', '/', '-', '_', '%', ' ', '\n', '\r', '\t', '"', "'", '#', '!', '$', '(',
             '`', ';', '\\', '\x00', 'é', '٨', '８', '\u200b', '\ufeff'] + list('0123456789abcdef'))
SEEDS = {
    'guest': ['web01', 'a.b+c:d@e-f'], 'guest_ip': ['192.168.122.10', '192.168.122.77'],
    'proto': ['tcp', 'udp', 'sctp'], 'host_port': ['8080', '10000-10009', '1:2'], 'guest_port': ['80', '20000-20009'],
    'masquerade': ['auto', 'always', 'never'], 'public_ip': ['203.0.113.10', '203.0.113.99'],
    'in_interface': ['eth0', 'br+'], 'guest_network': ['192.168.122.0/24', '192.168.0.0/16'],
    'sources': ['198.51.100.0/24', '192.0.2.7'],
}
SEEDS6 = dict(SEEDS, guest_ip=['2001:db8:122::10', '2001:db8:122:0:1::7'], public_ip=['2001:db8::10', '2001:db8::99'],
              guest_network=['2001:db8:122::/64', '2001:db8:122::/48'], sources=['2001:db8:1::/48', '2001:db8::7'])


def _mutate(rng, text):
    text = list(text)
    for _step in range(rng.randint(1, 3)):
        op = rng.random()
        pos = rng.randint(0, len(text))
        if op < 0.5:
            text.insert(pos, rng.choice(ALPHABET))
        elif text:
            del text[min(pos, len(text) - 1)]
    return ''.join(text)


def _raw(rng):
    """A forward from valid seeds with one or two fields mutated, or (one time in four) random everywhere."""
    wild = rng.random() < 0.25
    seeds = rng.choice([SEEDS, SEEDS6])
    raw = {key: rng.choice(values) for key, values in seeds.items() if key != 'sources'}
    raw['sources'] = [rng.choice(seeds['sources']) for _index in range(rng.randint(0, 2))]
    for key in rng.sample(sorted(SEEDS), k=len(SEEDS) if wild else rng.randint(0, 2)):
        if key == 'sources':
            raw['sources'] = [_mutate(rng, s) for s in raw['sources']] or [_mutate(rng, '198.51.100.0/24')]
        elif wild:
            raw[key] = ''.join(rng.choice(ALPHABET) for _index in range(rng.randint(0, 12)))
        else:
            raw[key] = _mutate(rng, str(raw[key]))
    for key in ('guest_network', 'public_ip', 'in_interface', 'guest_port'):
        if rng.random() < 0.5:
            raw.pop(key, None)
    if raw.get('guest_network') and not wild and raw['guest_network'] in seeds['guest_network'] and \
            raw['guest_ip'] == seeds['guest_ip'][1]:
        raw.pop('guest_network')                      # 192.168.122.77 is not in every seed network
    return raw


def test_fuzz_never_a_traceback_never_a_line_outside_the_grammar():
    """Random strings and unicode in every string parameter, bounded in count and time."""
    rng = random.Random(2026)
    deadline = time.monotonic() + 20
    accepted = refused_count = 0
    for case in range(4000):
        if time.monotonic() > deadline:
            break
        raws = [_raw(rng) for _index in range(rng.randint(1, 4))]
        for index, raw in enumerate(raws):          # distinct ports, so most sets do not overlap
            if isinstance(raw.get('host_port'), str) and raw['host_port'] in SEEDS['host_port']:
                raw['host_port'] = str(2000 + 20 * index + case % 7)
                raw.pop('guest_port', None)
        kwargs = {'public_ip': rng.choice(['203.0.113.10', _mutate(rng, '203.0.113.10')]),
                  'public_ip6': rng.choice(['2001:db8::10', _mutate(rng, '2001:db8::10')]),
                  'in_interface': rng.choice([None, None, 'eth0', _mutate(rng, 'eth0')])}
        prefix = rng.choice(['KVMNAT', 'LAB2', _mutate(rng, 'KVMNAT')])
        try:
            forwards = F.parse_forwards(raws, **kwargs)
        except F.ForwardError as exc:
            assert exc.errors and all(isinstance(e, str) for e in exc.errors)
            refused_count += 1
            continue
        if not R.valid_prefix(prefix):
            continue
        accepted += 1
        for family in (4, 6):
            desired = R.desired_state(forwards, family, prefix)
            text = K.persist_text(desired, 'nft')         # runs plan({}) and both grammar checks
            live = as_live(text)
            assert P.plan(live, desired).changed is False, case
            P.plan(live, R.desired_state([], family, prefix))   # removal passes the grammar too
    assert accepted > 100 and refused_count > 100, (accepted, refused_count)
