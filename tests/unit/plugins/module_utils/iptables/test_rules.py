# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""plugins/module_utils/iptables/rules.py: the desired state rendered from validated forwards. No root, no host."""

from __future__ import annotations

import ipaddress
import random

import pytest

from ansible_collections.kvmnet.nat.plugins.module_utils import _forward as F
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables import diagnose as I
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables import rules as R
from ansible_collections.kvmnet.nat.tests.support import rulewalk
from ansible_collections.kvmnet.nat.tests.support.rulesets import ISSUE_EXAMPLE, PUB, example_forwards, fwd


EXPECTED_V4 = {
    ('nat', 'KVMNAT_DNAT'): [
        '-s 198.51.100.0/24 -d 203.0.113.10/32 -p tcp -m tcp --dport 2222 -m comment --comment '
        '"kvmnet.nat: web01 tcp/2222->22" -j DNAT --to-destination 192.168.122.10:22',
        '-d 203.0.113.10/32 -p tcp -m tcp --dport 8080 -m comment --comment "kvmnet.nat: web01 tcp/8080->80" '
        '-j DNAT --to-destination 192.168.122.10:80',
        '-d 203.0.113.10/32 -p tcp -m tcp --dport 8443 -m comment --comment "kvmnet.nat: app02 tcp/8443->443" '
        '-j DNAT --to-destination 192.168.122.13:443',
        '-d 203.0.113.10/32 -p tcp -m tcp --dport 10000:10009 -m comment --comment '
        '"kvmnet.nat: app01 tcp/10000-10009->20000-20009" -j DNAT --to-destination 192.168.122.12:20000-20009/10000',
        '-d 203.0.113.10/32 -p udp -m udp --dport 5353 -m comment --comment "kvmnet.nat: dns01 udp/5353->53" '
        '-j DNAT --to-destination 192.168.122.11:53',
    ],
    ('nat', 'KVMNAT_SNAT'): [
        '-s 192.168.122.0/24 -d 192.168.122.10/32 -p tcp -m tcp --dport 80 -m conntrack --ctstate DNAT '
        '--ctorigdst 203.0.113.10 --ctorigdstport 8080 -m comment --comment "kvmnet.nat: web01 tcp/8080->80 hairpin" '
        '-j MASQUERADE',
        '-d 192.168.122.13/32 -p tcp -m tcp --dport 443 -m conntrack --ctstate DNAT --ctorigdst 203.0.113.10 '
        '--ctorigdstport 8443 -m comment --comment "kvmnet.nat: app02 tcp/8443->443 masquerade" -j MASQUERADE',
    ],
    ('filter', 'KVMNAT_FWD'): [
        # web01's first forward names its network: that one rule covers every guest in it
        '-m conntrack --ctstate RELATED,ESTABLISHED --ctorigdst 203.0.113.10 --ctreplsrc 192.168.122.0/24 '
        '-m comment --comment "kvmnet.nat: network 192.168.122.0/24 established" -j ACCEPT',
        '-d 192.168.122.10/32 -p tcp -m tcp --dport 22 -m conntrack --ctstate DNAT --ctorigdst 203.0.113.10 '
        '--ctorigdstport 2222 -m comment --comment "kvmnet.nat: web01 tcp/2222->22" -j ACCEPT',
        '-d 192.168.122.10/32 -p tcp -m tcp --dport 80 -m conntrack --ctstate DNAT --ctorigdst 203.0.113.10 '
        '--ctorigdstport 8080 -m comment --comment "kvmnet.nat: web01 tcp/8080->80" -j ACCEPT',
        '-d 192.168.122.13/32 -p tcp -m tcp --dport 443 -m conntrack --ctstate DNAT --ctorigdst 203.0.113.10 '
        '--ctorigdstport 8443 -m comment --comment "kvmnet.nat: app02 tcp/8443->443" -j ACCEPT',
        '-d 192.168.122.12/32 -p tcp -m tcp --dport 20000:20009 -m conntrack --ctstate DNAT --ctorigdst 203.0.113.10 '
        '--ctorigdstport 10000:10009 -m comment --comment "kvmnet.nat: app01 tcp/10000-10009->20000-20009" -j ACCEPT',
        '-d 192.168.122.11/32 -p udp -m udp --dport 53 -m conntrack --ctstate DNAT --ctorigdst 203.0.113.10 '
        '--ctorigdstport 5353 -m comment --comment "kvmnet.nat: dns01 udp/5353->53" -j ACCEPT',
    ],
}


EXPECTED_JUMPS = [
    ('nat', 'PREROUTING', '-m comment --comment "kvmnet.nat: jump" -j KVMNAT_DNAT'),
    ('nat', 'OUTPUT', '-m addrtype --dst-type LOCAL -m comment --comment "kvmnet.nat: jump" -j KVMNAT_DNAT'),
    ('nat', 'POSTROUTING', '-m comment --comment "kvmnet.nat: jump" -j KVMNAT_SNAT'),
    ('filter', 'FORWARD', '-m comment --comment "kvmnet.nat: jump" -j KVMNAT_FWD'),
]


def test_desired_state_of_the_issue_example():
    desired = R.desired_state(example_forwards(), 4)
    assert desired.chains == EXPECTED_V4
    assert desired.jumps == EXPECTED_JUMPS
    assert R.desired_state(example_forwards(), 6).empty


@pytest.mark.parametrize('raw, kwargs, expected_dnat', [
    (fwd(host_port='11000-11009', guest_port='11000-11009'), {},
     '-d 203.0.113.10/32 -p tcp -m tcp --dport 11000:11009 -m comment --comment '
     '"kvmnet.nat: web01 tcp/11000-11009->11000-11009" -j DNAT --to-destination 192.168.122.10'),
    (fwd(), {'public_ip': None, 'in_interface': 'eth0'},
     '-i eth0 -p tcp -m tcp --dport 8080 -m comment --comment "kvmnet.nat: web01 tcp/8080->80" '
     '-j DNAT --to-destination 192.168.122.10:80'),
    (fwd(guest_ip='2001:db8:1::10', proto='sctp'), {'public_ip6': '2001:db8::10'},
     '-d 2001:db8::10/128 -p sctp -m sctp --dport 8080 -m comment --comment "kvmnet.nat: web01 sctp/8080->80" '
     '-j DNAT --to-destination [2001:db8:1::10]:80'),
])
def test_dnat_variants(raw, kwargs, expected_dnat):
    args = dict(public_ip=PUB)
    args.update(kwargs)
    (forward,) = F.parse_forwards([raw], **args)
    assert R.render_dnat(forward) == [expected_dnat]


def test_interface_only_forward_matches_origin_without_address():
    (forward,) = F.parse_forwards([fwd(masquerade='always')], in_interface='eth0')
    desired = R.desired_state([forward], 4)
    assert desired.chains[('filter', 'KVMNAT_FWD')][0] == (
        '-m conntrack --ctstate RELATED,ESTABLISHED ! --ctorigdst 192.168.122.10 --ctreplsrc 192.168.122.10 '
        '-m comment --comment "kvmnet.nat: web01 established" -j ACCEPT')
    assert desired.chains[('nat', 'KVMNAT_SNAT')] == [
        '-d 192.168.122.10/32 -p tcp -m tcp --dport 80 -m conntrack --ctstate DNAT --ctorigdstport 8080 '
        '-m comment --comment "kvmnet.nat: web01 tcp/8080->80 masquerade" -j MASQUERADE']


@pytest.mark.parametrize('mode, network, count', [
    ('never', '192.168.122.0/24', 0), ('auto', None, 0), ('auto', '192.168.122.0/24', 1), ('always', None, 1),
])
def test_masquerade_modes(mode, network, count):
    (forward,) = F.parse_forwards([fwd(masquerade=mode, guest_network=network)], public_ip=PUB)
    rules = R.render_masquerade(forward)
    assert len(rules) == count
    for rule in rules:
        assert '--ctorigdstport 8080' in rule and '-d 192.168.122.10/32' in rule  # never unscoped


def test_one_dnat_per_source():
    (forward,) = F.parse_forwards([fwd(sources=['198.51.100.0/24', '192.0.2.7'])], public_ip=PUB)
    assert [rule.split()[1] for rule in R.render_dnat(forward)] == ['192.0.2.7/32', '198.51.100.0/24']


def test_forward_order_does_not_change_the_rules():
    forward = R.desired_state(F.parse_forwards(ISSUE_EXAMPLE, public_ip=PUB), 4)
    backward = R.desired_state(F.parse_forwards(list(reversed(ISSUE_EXAMPLE)), public_ip=PUB), 4)
    assert forward.chains == backward.chains


@pytest.mark.parametrize('text, rendered', [
    ('2001:DB8::1', '2001:db8::1/128'),
    ('2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1/128'),
    ('2001:0db8::0001', '2001:db8::1/128'),
    ('::1.2.3.4', '::1.2.3.4/128'),          # what iptables (inet_ntop) prints, not Python's ::102:304
    ('2001:db8::', '2001:db8::/128'),
])
def test_addresses_are_rendered_from_their_parsed_value_as_iptables_prints_them(text, rendered):
    assert R._addr(F.parse_address(text, 'x')) == rendered


# ---------------------------------------------------------------- chain prefix


@pytest.mark.parametrize('prefix, ok', [('KVMNAT', True), ('LAB2', True), ('kvmnat', False), ('', False),
                                        ('A' * 17, False), ('KVM_NAT', False)])
def test_valid_prefix(prefix, ok):
    assert R.valid_prefix(prefix) is ok


@pytest.mark.parametrize('prefix, ok', [('KVMNAT', True), ('KVMNAT\n', False), ('KVM NAT', False), ('ＫＶＭ', False),
                                        ('K' * 16, True), ('K' * 17, False)])
def test_chain_prefix_is_matched_whole(prefix, ok):
    assert R.valid_prefix(prefix) is ok


# ---------------------------------------------------------------- established accepts


def _scopes(raws, **kwargs):
    return [(name, str(side), str(pub) if pub else None)
            for name, side, pub in R.established_scopes(F.parse_forwards(raws, **kwargs))]


def test_established_accept_per_network_or_per_guest():
    net = '192.168.122.0/24'
    raws = [fwd(guest='a', guest_ip='192.168.122.10', host_port=1000, guest_network=net),
            fwd(guest='b', guest_ip='192.168.122.11', host_port=1001, guest_network=net),
            fwd(guest='c', guest_ip='192.168.122.12', host_port=1002),            # in the network: covered
            fwd(guest='d', guest_ip='10.0.0.5', host_port=1003, masquerade='always'),  # network unknown
            fwd(guest='d', guest_ip='10.0.0.5', host_port=1004, masquerade='always')]
    assert _scopes(raws, public_ip=PUB) == [('network %s' % net, net, PUB), ('d', '10.0.0.5', PUB)]


def test_established_accept_on_another_public_address_is_kept():
    net = '192.168.122.0/24'
    raws = [fwd(guest='a', host_port=1000, guest_network=net),
            fwd(guest='b', guest_ip='192.168.122.11', host_port=1001, public_ip='203.0.113.20')]
    assert _scopes(raws, public_ip=PUB) == [('network %s' % net, net, PUB), ('b', '192.168.122.11', '203.0.113.20')]


def test_established_accept_without_public_address_covers_the_ones_with():
    net = '192.168.122.0/24'
    raws = [fwd(guest='a', host_port=1000, guest_network=net, public_ip='203.0.113.20'),
            fwd(guest='b', guest_ip='192.168.122.11', host_port=1001, guest_network=net, in_interface='eth0')]
    assert _scopes(raws) == [('network %s' % net, net, None)]
    rule = R.render_established('network %s' % net, F.ipaddress.ip_network(net), None)
    assert rule.startswith('-m conntrack --ctstate RELATED,ESTABLISHED ! --ctorigdst 192.168.122.0/24 '
                           '--ctreplsrc 192.168.122.0/24 ')


# ---------------------------------------------------------------- dispatch by port


def test_dispatch_finds_the_first_rule_the_flat_chain_would_find():
    """Random rules, ranges crossing splits, one port in several rules: tree and flat chain agree
    (rulewalk follows both as the kernel would; a rule's other match is its source network)."""
    rng = random.Random(5)
    for _round in range(40):
        items = []
        for i in range(rng.randint(1, 120)):
            first = rng.randint(1, 400)
            ports = F.PortRange(first, first + rng.choice([0, 0, 0, 3, 40]))
            proto = rng.choice(['tcp', 'udp'])
            source = rng.choice(['198.51.100.0/24', '192.0.2.0/24'])
            items.append((proto, ports, '-s %s -p %s -m %s --dport %s -m comment --comment "kvmnet.nat: r%d" -j ACCEPT'
                          % (source, proto, proto, ports.match, i)))
        chains = {}
        chains['T'] = R._Dispatch(chains, 'nat', 'T', R._port_node).rules(items)
        chains = {name[1] if isinstance(name, tuple) else name: rules for name, rules in chains.items()}
        assert sum(len(r) for r in chains.values()) < 10 * len(items) + 10
        flat = {'T': [spec for _p, _ports, spec in items]}
        edges = {p for _proto, ports, _spec in items for p in (ports.first - 1, ports.first, ports.last, ports.last + 1)}
        for proto in ('tcp', 'udp'):
            for port in sorted(edges | set(rng.sample(range(1, 460), 40))):
                packet = dict(proto=proto, dport=port, src='198.51.100.7')
                assert rulewalk.walk(chains, 'T', packet) == rulewalk.walk(flat, 'T', packet), (proto, port)


def test_a_few_forwards_stay_in_one_flat_chain():
    raws = [fwd(host_port=1000 + i, guest_port=80) for i in range(R.LEAF_RULES)]
    desired = R.desired_state(F.parse_forwards(raws, public_ip=PUB), 4)
    assert sorted(chain for _table, chain in desired.chains) == ['KVMNAT_DNAT', 'KVMNAT_FWD', 'KVMNAT_SNAT']


def test_many_forwards_go_into_short_owned_sub_chains():
    raws = [fwd(guest='g%d' % (i % 9), guest_ip='192.168.122.%d' % (10 + i % 9), host_port=10000 + i,
                guest_network='192.168.122.0/24', proto='udp' if i % 4 == 0 else 'tcp') for i in range(1000)]
    desired = R.desired_state(F.parse_forwards(raws, public_ip=PUB, public_ip6='2001:db8::10'), 4,
                              prefix='ABCDEFGHIJKLMNOP')
    names = list(desired.chains)
    assert len(names) > 3 and all(len(name) <= 28 and R.owned(name, 'ABCDEFGHIJKLMNOP', table) for table, name in names)
    for rules in desired.chains.values():
        assert rules and all(R.is_ours(spec) for spec in rules)
        assert len(rules) <= R.LEAF_RULES
    # connections from outside pass the hairpin rules with one test of the source
    snat = desired.chains[('nat', 'ABCDEFGHIJKLMNOP_SNAT')]
    assert len(snat) == 1 and snat[0].startswith('-s 192.168.122.0/24 ')
    # one established accept for the network, then the two protocols' top nodes
    assert len(desired.chains[('filter', 'ABCDEFGHIJKLMNOP_FWD')]) == 5


# ---------------------------------------------------------------- hairpin behind the dispatch tree (issue 11)


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


# ---------------------------------------------------------------- what is ours


@pytest.mark.parametrize('spec, ours', [
    ('-m comment --comment "kvmnet.nat: web01 tcp/8080->80" -j ACCEPT', True),
    ('-m comment --comment kvmnet.nat:x -j ACCEPT', False),
    ('-m comment --comment "kvmnet.natx: y" -j ACCEPT', False),
    ('-m comment --comment "admin: kvmnet.nat: y" -j ACCEPT', False),
])
def test_one_rule_for_what_is_ours(spec, ours):
    """The planner's and the doctor's idea of "ours" are one function."""
    assert R.is_ours(spec) is ours
    assert I.is_ours is R.is_ours and I.Diagnosis.is_ours is R.is_ours
