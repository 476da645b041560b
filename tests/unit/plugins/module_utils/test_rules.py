# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of the pure engine, on recorded iptables-save text. No root, no host."""

from __future__ import annotations

import hashlib
import os
import random

import pytest

from ansible_collections.kvmnet.nat.plugins.module_utils import _backend as B
from ansible_collections.kvmnet.nat.plugins.module_utils import _doctor as D
from ansible_collections.kvmnet.nat.plugins.module_utils import _forward as F
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables import persisted as K
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables import plan as P
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables import rules as R
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables import save as S
from ansible_collections.kvmnet.nat.tests.unit.plugins.module_utils import rulewalk

FIXTURES = os.path.join(os.path.dirname(__file__), 'fixtures')
PUB = '203.0.113.10'


def fixture(name):
    with open(os.path.join(FIXTURES, name)) as handle:
        return handle.read()


def fwd(**kw):
    base = dict(guest='web01', guest_ip='192.168.122.10', host_port=8080, guest_port=80)
    base.update(kw)
    return base


# ---------------------------------------------------------------- ports

@pytest.mark.parametrize('value, expected', [
    (8080, F.PortRange(8080, 8080)),
    ('8080', F.PortRange(8080, 8080)),
    ('10000-10009', F.PortRange(10000, 10009)),
    ('10000:10009', F.PortRange(10000, 10009)),
    (' 1 - 65535 ', F.PortRange(1, 65535)),
])
def test_parse_ports_accepts(value, expected):
    assert F.parse_ports(value) == expected


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
        F.parse_ports(value)
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
    with pytest.raises(F.ForwardError) as exc:
        F.parse_forwards(forwards, **args)
    assert any(expected in err for err in exc.value.errors), exc.value.errors


def test_every_problem_is_reported_at_once():
    with pytest.raises(F.ForwardError) as exc:
        F.parse_forwards([fwd(host_port=0), fwd(guest='dns01', proto='icmp', host_port=53)], public_ip=PUB)
    assert len(exc.value.errors) == 2
    assert exc.value.errors[0].startswith('forward web01 tcp/0:')
    assert exc.value.errors[1].startswith('forward dns01 icmp/53:')


def test_same_port_on_different_public_ips_or_protocols_is_fine():
    result = F.parse_forwards([
        fwd(), fwd(guest='web02', guest_ip='192.168.122.11', public_ip='203.0.113.11'),
        fwd(guest='dns', guest_ip='192.168.122.12', proto='udp'),
    ], public_ip=PUB)
    assert sorted(f.guest for f in result) == ['dns', 'web01', 'web02']


def test_guest_port_defaults_to_host_port():
    (result,) = F.parse_forwards([dict(guest='a', guest_ip='192.168.122.5', host_port='10000-10001')], public_ip=PUB)
    assert result.guest_ports == F.PortRange(10000, 10001)


# ---------------------------------------------------------------- rendering

ISSUE_EXAMPLE = [
    dict(guest='web01', guest_ip='192.168.122.10', proto='tcp', host_port=8080, guest_port=80,
         guest_network='192.168.122.0/24'),
    dict(guest='web01', guest_ip='192.168.122.10', host_port=2222, guest_port=22, sources=['198.51.100.0/24']),
    dict(guest='dns01', guest_ip='192.168.122.11', proto='udp', host_port=5353, guest_port=53),
    dict(guest='app01', guest_ip='192.168.122.12', host_port='10000-10009', guest_port='20000-20009'),
    dict(guest='app02', guest_ip='192.168.122.13', host_port=8443, guest_port=443, masquerade='always'),
]

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


def example_forwards():
    return F.parse_forwards(ISSUE_EXAMPLE, public_ip=PUB)


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


# ---------------------------------------------------------------- parsing

def test_parse_save_keeps_others_rules_in_order_and_drops_counters():
    tables = S.parse_save(fixture('libvirt-docker.save'))
    assert sorted(tables) == ['filter', 'mangle', 'nat']
    assert tables['filter'].chains['FORWARD'] == 'DROP'
    assert tables['filter'].rules['FORWARD'][:4] == [
        '-j DOCKER-USER', '-j LIBVIRT_FWX', '-j LIBVIRT_FWI', '-j LIBVIRT_FWO']
    assert tables['filter'].rules['LIBVIRT_FWI'][-1] == '-o virbr0 -j REJECT --reject-with icmp-port-unreachable'
    assert tables['nat'].chains['PREROUTING'] == 'ACCEPT'


def test_parse_save_with_counters():
    tables = S.parse_save('*filter\n:FORWARD ACCEPT [5:300]\n[4:240] -A FORWARD -j ACCEPT\nCOMMIT\n')
    assert tables['filter'].rules['FORWARD'] == ['-j ACCEPT']


@pytest.mark.parametrize('text', ['-A FORWARD -j ACCEPT\n', '*filter\nnonsense\nCOMMIT\n',
                                  '*filter\n[0:0] -A\nCOMMIT\n', '*filter\n-A FORWARD\nCOMMIT\n'])
def test_parse_save_refuses_garbage(text):
    with pytest.raises(B.RulesetError):
        S.parse_save(text)


# ---------------------------------------------------------------- planning

def live_with_ours(extra_forward_rules=(), jump_positions=None):
    """The fixture with our chains applied as the engine renders them."""
    tables = S.parse_save(fixture('libvirt-docker.save'))
    desired = R.desired_state(example_forwards(), 4)
    for (tname, chain), rules in desired.chains.items():
        tables[tname].chains[chain] = '-'
        tables[tname].rules[chain] = list(rules)
    for tname, chain, spec in desired.jumps:
        tables[tname].rules.setdefault(chain, []).insert(0, spec)
    for spec in extra_forward_rules:
        tables['filter'].rules['FORWARD'].insert(0, spec)
    return tables, desired


def test_fresh_host_payload():
    tables = S.parse_save(fixture('libvirt-docker.save'))
    result = P.plan(tables, R.desired_state(example_forwards(), 4))
    lines = result.payload.splitlines()
    assert result.changed
    assert lines[0] == '*filter'
    assert lines[1] == ':KVMNAT_FWD - [0:0]'
    assert lines[-2] == '-I POSTROUTING 1 -m comment --comment "kvmnet.nat: jump" -j KVMNAT_SNAT'
    assert lines.count('COMMIT') == 2
    assert not any(line.startswith(('-F', '-X', '-D')) for line in lines)  # nothing of others touched
    assert not any('INPUT' in line for line in lines)
    assert not any('LIBVIRT' in line or 'DOCKER' in line for line in lines)


def test_unchanged_ruleset_plans_nothing():
    tables, desired = live_with_ours()
    result = P.plan(tables, desired)
    assert (result.changed, result.payload, result.reasons) == (False, '', [])
    assert result.before == result.after


def test_rule_inserted_above_our_jump_moves_it_back():
    tables, desired = live_with_ours(extra_forward_rules=['-s 192.0.2.66/32 -j DROP'])
    result = P.plan(tables, desired)
    assert result.payload == (
        '*filter\n'
        '-D FORWARD -m comment --comment "kvmnet.nat: jump" -j KVMNAT_FWD\n'
        '-I FORWARD 1 -m comment --comment "kvmnet.nat: jump" -j KVMNAT_FWD\n'
        'COMMIT\n')
    assert result.reasons == ['filter FORWARD: jump was at position 2, moved back to 1']


def test_duplicate_jumps_are_reduced_to_one():
    tables, desired = live_with_ours()
    ours = '-m comment --comment "kvmnet.nat: jump" -j KVMNAT_DNAT'
    tables['nat'].rules['PREROUTING'].append(ours)  # e.g. restored twice at boot by an old script
    result = P.plan(tables, desired)
    assert result.payload == (
        '*nat\n'
        '-D PREROUTING %s\n'
        '-D PREROUTING %s\n'
        '-I PREROUTING 1 %s\n'
        'COMMIT\n' % (ours, ours, ours))
    assert result.reasons == ['nat PREROUTING: 2 jumps to kvmnet.nat chains, keeping one']


def test_removing_a_forward_rewrites_only_that_chain_set():
    tables, _old = live_with_ours()
    fewer = [f for f in ISSUE_EXAMPLE if f['guest'] != 'dns01']
    result = P.plan(tables, R.desired_state(F.parse_forwards(fewer, public_ip=PUB), 4))
    removed = sorted(set(result.before) - set(result.after))
    assert result.changed
    assert set(result.after) - set(result.before) == set()
    assert all('dns01' in line for line in removed), removed
    assert len(removed) == 2  # its DNAT and its forward accept; the network's established accept stays
    assert 'KVMNAT_SNAT' not in result.payload  # unchanged chain is not rewritten


def test_absent_removes_jumps_then_chains():
    tables, _desired = live_with_ours()
    result = P.plan(tables, R.desired_state([], 4))
    assert result.after == []
    filter_block = result.payload.split('COMMIT')[0].splitlines()
    assert filter_block == [
        '*filter',
        ':KVMNAT_FWD - [0:0]',
        '-D FORWARD -m comment --comment "kvmnet.nat: jump" -j KVMNAT_FWD',
        '-X KVMNAT_FWD',
    ]


def test_absent_on_a_host_without_our_rules_is_a_no_op():
    result = P.plan(S.parse_save(fixture('libvirt-docker.save')), R.desired_state([], 4))
    assert (result.changed, result.payload) == (False, '')


@pytest.mark.parametrize('mutate, message', [
    (lambda t: t['filter'].rules['KVMNAT_FWD'].append('-j DROP'),
     'chain KVMNAT_FWD in table filter exists and holds rules kvmnet.nat did not write (first: -j DROP)'),
    (lambda t: t['filter'].rules['DOCKER-USER'].insert(0, '-j KVMNAT_FWD'),
     'rule "-A DOCKER-USER -j KVMNAT_FWD" in table filter jumps into a kvmnet.nat chain'),
    # our comment is always quoted (it holds a space): an unquoted kvmnet.nat: comment is someone else's
    # (the planner once took it for ours, and would have flushed it away; the doctor never did)
    (lambda t: t['filter'].rules['KVMNAT_FWD'].append('-m comment --comment kvmnet.nat:x -j DROP'),
     'holds rules kvmnet.nat did not write (first: -m comment --comment kvmnet.nat:x -j DROP)'),
])
def test_foreign_use_of_our_chains_is_refused(mutate, message):
    tables, desired = live_with_ours()
    mutate(tables)
    with pytest.raises(B.RulesetError) as exc:
        P.plan(tables, desired)
    assert message in str(exc.value)


def test_foreign_chain_with_our_name_on_a_fresh_host():
    tables = S.parse_save(fixture('libvirt-docker.save'))
    tables['nat'].chains['KVMNAT_DNAT'] = '-'
    tables['nat'].rules['KVMNAT_DNAT'] = ['-p tcp -m tcp --dport 80 -j DNAT --to-destination 10.0.0.1:80']
    with pytest.raises(B.RulesetError):
        P.plan(tables, R.desired_state(example_forwards(), 4))


def test_other_prefix_leaves_default_chains_alone():
    tables, _desired = live_with_ours()
    result = P.plan(tables, R.desired_state(example_forwards(), 4, prefix='LAB'))
    assert 'KVMNAT' not in result.payload
    assert ':LAB_DNAT - [0:0]' in result.payload


def test_persist_text_is_a_header_and_the_payload_that_builds_everything():
    desired = R.desired_state(example_forwards(), 4)
    text = K.persist_text(desired, 'nft')
    header, meta, body = text.split('\n', 2)
    assert header.startswith('# Managed by kvmnet.nat')
    assert meta == '# kvmnet-nat-restore format=2 family=4 flavour=nft prefix=KVMNAT sha256=%s' % (
        hashlib.sha256(body.encode()).hexdigest())
    assert body == P.plan({}, desired).payload
    lines = body.splitlines()
    assert lines[0] == '*filter' and lines.count('COMMIT') == 2
    rules = [line for line in lines if line.startswith(('-A', '-I'))]
    assert all(line.startswith(('-A KVMNAT_', '-I ')) for line in rules)
    assert [line for line in rules if line.startswith('-I')] == [
        '-I FORWARD 1 -m comment --comment "kvmnet.nat: jump" -j KVMNAT_FWD',
        '-I PREROUTING 1 -m comment --comment "kvmnet.nat: jump" -j KVMNAT_DNAT',
        '-I OUTPUT 1 -m addrtype --dst-type LOCAL -m comment --comment "kvmnet.nat: jump" -j KVMNAT_DNAT',
        '-I POSTROUTING 1 -m comment --comment "kvmnet.nat: jump" -j KVMNAT_SNAT',
    ]


@pytest.mark.parametrize('prefix, ok', [('KVMNAT', True), ('LAB2', True), ('kvmnat', False), ('', False),
                                        ('A' * 17, False), ('KVM_NAT', False)])
def test_valid_prefix(prefix, ok):
    assert R.valid_prefix(prefix) is ok


def test_overlap_sweep_finds_exactly_the_pairs_a_pairwise_check_finds():
    import random
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
    with pytest.raises(F.ForwardError) as info:
        F.parse_forwards(raw, '203.0.113.10', None, None)
    forwards = [F.parse_forwards([r], '203.0.113.10', None, None)[0] for r in raw]
    expected = ['forward %s and forward %s claim the same %s port(s) on %s'
                % (a.label, b.label, a.proto, a.public_ip or b.public_ip or a.in_interface or b.in_interface)
                for i, a in enumerate(forwards) for b in forwards[i + 1:]
                if F.scopes_meet(a, b) and a.host_ports.overlaps(b.host_ports)]
    assert expected and info.value.errors == expected


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


@pytest.mark.parametrize('spec, ours', [
    ('-m comment --comment "kvmnet.nat: web01 tcp/8080->80" -j ACCEPT', True),
    ('-m comment --comment kvmnet.nat:x -j ACCEPT', False),
    ('-m comment --comment "kvmnet.natx: y" -j ACCEPT', False),
    ('-m comment --comment "admin: kvmnet.nat: y" -j ACCEPT', False),
])
def test_one_rule_for_what_is_ours(spec, ours):
    """The planner's and the doctor's idea of "ours" are one function."""
    assert R.is_ours(spec) is ours
    assert D._is_ours is R.is_ours


@pytest.mark.parametrize('edit, message', [
    (lambda text: text.replace('-j DNAT', '-j ACCEPT', 1), 'checksum does not match'),
    (lambda text: text.split('\n', 2)[2], 'no valid kvmnet-nat-restore header'),
    (lambda text: text.replace('family=4', 'family=6'), 'family=6 (expected 4)'),
])
def test_a_persisted_file_is_read_back_only_when_intact_and_for_this_run(edit, message):
    text = K.persist_text(R.desired_state(example_forwards(), 4), 'nft')
    assert K.desired_from_persisted(text, 4, 'KVMNAT') == R.desired_state(example_forwards(), 4)
    with pytest.raises(B.RulesetError) as exc:
        K.desired_from_persisted(edit(text), 4, 'KVMNAT')
    assert message in str(exc.value)
