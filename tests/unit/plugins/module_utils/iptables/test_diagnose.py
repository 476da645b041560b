# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""iptables/diagnose.py: what the doctor asks of the iptables backend, on recorded iptables-save text."""

from __future__ import annotations

import pytest

from ansible_collections.kvmnet.nat.plugins.module_utils import _forward as F
from ansible_collections.kvmnet.nat.plugins.module_utils import _schema
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables import diagnose as I
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables import rules as R
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables import save as S
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables.backend import Engine
from ansible_collections.kvmnet.nat.tests.unit.plugins import fakes

PUB = '203.0.113.10'
FORWARD = dict(guest='web01', guest_ip='192.168.122.10', host_port=8080, guest_port=80, guest_network='192.168.122.0/24')


def fwd(**changes):
    return F.parse_forwards([dict(FORWARD, **changes)], public_ip=PUB)[0]


def ours(prefix='KVMNAT', forwards=None, drop_forward=False):
    """iptables-save -c text of the rules kvmnet.nat writes for ``forwards`` (libvirt's FORWARD chain beside)."""
    desired = R.desired_state(forwards or [fwd()], 4, prefix)
    lines = []
    for table in ('nat', 'filter'):
        lines.append('*' + table)
        builtins = ('PREROUTING', 'OUTPUT', 'POSTROUTING') if table == 'nat' else ('FORWARD',)
        lines.extend(':%s %s [0:0]' % (c, 'DROP' if drop_forward and c == 'FORWARD' else 'ACCEPT') for c in builtins)
        lines.extend(':%s - [0:0]' % c for (t, c) in desired.chains if t == table)
        lines.extend('[%d:0] -A %s %s' % (i, chain, spec) for i, (t, chain, spec) in enumerate(desired.jumps, 7) if t == table)
        lines.extend('[0:0] -A %s %s' % (c, s) for (t, c), rules in desired.chains.items() if t == table for s in rules)
        lines.append('COMMIT')
    return '\n'.join(lines) + '\n'


def diagnosis(prefix='KVMNAT', module=None):
    return I.Diagnosis(Engine(module, prefix, 0))


def test_the_prefix_problem_is_the_engines_one_text():
    assert diagnosis('kvm nat').problems() == Engine(None, 'kvm nat', 0).problems()
    assert len(diagnosis('kvm nat').problems()) == 1 and diagnosis().problems() == []
    assert R.DEFAULT_PREFIX is _schema.DEFAULT_PREFIX


def test_hooks_name_every_jump_in_the_engines_order_with_its_positions():
    live = S.parse_save(ours())
    jumps = [(t, c) for t, c, _s in R.render_jumps('KVMNAT')]
    assert list(diagnosis().hooks(live).items()) == [(jump, [1]) for jump in jumps]
    assert list(diagnosis('OTHER').hooks(live).items()) == [(jump, []) for jump in jumps]
    assert list(diagnosis().hooks({}).items()) == [(jump, []) for jump in jumps]


@pytest.mark.parametrize('table, chain, expected', [
    ('filter', 'FORWARD', (True, 'ACCEPT')),
    ('filter', 'KVMNAT_FWD', (True, '-')),
    ('filter', 'NOSUCH', (True, None)),
    ('raw', 'PREROUTING', (False, None)),
])
def test_policy_says_whether_the_table_and_chain_are_there(table, chain, expected):
    assert diagnosis().policy(S.parse_save(ours()), table, chain) == expected


def test_owned_and_our_rules_against_a_forwards_declaration():
    live = S.parse_save(ours())
    backend = diagnosis()
    assert backend.owned(live) and not diagnosis('OTHER').owned(live)
    mine = backend.ours(live)
    assert backend.missing(mine, live, fwd()) == []
    assert backend.missing(mine, live, fwd(guest_port=81)) == ['DNAT', 'accept', 'MASQUERADE']   # hairpin's too
    assert backend.missing(mine, live, fwd(masquerade='always')) == ['MASQUERADE']
    without_filter = {'nat': live['nat']}
    assert backend.missing(backend.ours(without_filter), without_filter, fwd(guest_port=81)) == ['DNAT', 'MASQUERADE']


def test_counters_are_read_by_chain_and_position():
    live = S.parse_save(ours())
    backend = diagnosis()
    assert backend.counter(live, 'nat', ('PREROUTING', 1)) == 7
    assert backend.counter(live, 'nat', ('PREROUTING', 2)) is None
    assert backend.counter(live, 'raw', ('PREROUTING', 1)) is None
    assert backend.counter(live, 'nat', None) is None


def test_the_probes_second_read_is_one_table_with_counters():
    module = fakes.FakeModule({}, {'iptables-nft-save -c -t nat': (0, ours().split('*filter', maxsplit=1)[0], '')})
    fam = type('Fam', (), {'family': 4, 'save_cmd': ['/usr/sbin/iptables-nft-save']})()
    again = diagnosis(module=module).reread(fam, 'nat')
    assert list(again) == ['nat'] and module.commands() == ['iptables-nft-save -c -t nat']
    assert diagnosis(module=fakes.FakeModule({}, {'iptables': (0, '', '')})).reread(fam, 'nat') == {}


def test_walks_and_rules_as_the_doctor_reads_them():
    live = S.parse_save(ours())
    backend = diagnosis()
    packet = {'proto': 'tcp', 'src': '198.51.100.7', 'dst': PUB, 'dport': 8080, 'iface': 'eth0', 'local': True}
    rules = backend.ruleset(live, 'nat')
    assert backend.has_chain(rules, 'PREROUTING') and not backend.has_chain(rules, 'NOSUCH')
    outcome = backend.follow(rules, 'PREROUTING', packet)
    assert outcome.target == 'DNAT' and backend.ends(outcome)
    assert backend.destination(outcome.rule[2]) == ('192.168.122.10', 80) and backend.is_ours(outcome.rule[2])
    assert backend.names_destination(outcome.rule[2]) and not backend.names_destination('-p tcp -j DNAT')
    assert backend.follow(rules, 'PREROUTING', packet, skip={outcome.rule[:2]}).target != 'DNAT'
    assert backend.walk(live, 'nat', 'PREROUTING', packet).rule == outcome.rule
    assert backend.ruleset(live, 'raw') is None
    assert (backend.passes().target, backend.passes().policy, backend.passes().rule) == ('ACCEPT', True, None)


@pytest.mark.parametrize('spec, diverts, target', [
    ('-p tcp -j TPROXY --on-port 3128', 'proxy', 'TPROXY'),
    ('-j NFQUEUE --queue-num 5', 'queue', 'NFQUEUE'),
    ('-j NFQUEUE --queue-num 5 --queue-bypass', None, 'NFQUEUE'),
    ('-j QUEUE', 'queue', 'QUEUE'),
    ('-j ACCEPT', None, 'ACCEPT'),
])
def test_rules_that_take_the_packet_away(spec, diverts, target):
    assert (diagnosis().diverts(spec), diagnosis().target(spec)) == (diverts, target)


def test_the_saved_file_as_the_declared_forwards_would_be_saved():
    backend = diagnosis()
    desired = backend.desired([fwd()], 4)
    text = backend.persisted_text(desired, 'nft')
    fields, body = backend.read_persisted(text)
    assert fields['valid'] and fields['flavour'] == 'nft'
    saved = backend.saved_rules(backend.saved_lines(body))
    assert set(backend.forward_rules(fwd())) <= saved
    assert not set(backend.forward_rules(fwd(guest_port=81))) <= saved
    assert backend.persisted_text(backend.desired([], 4), 'nft') is None
    assert backend.persisted_text(None, 'nft') is None
    assert backend.saved_lines('# a\n\n-A X -j Y\n') == ['-A X -j Y']


def test_our_dnat_destinations_by_label():
    assert diagnosis().dnat_destinations(S.parse_save(ours())) == {'web01 tcp/8080->80': '192.168.122.10'}
    assert diagnosis('OTHER').dnat_destinations(S.parse_save(ours())) == {}


def test_the_tool_of_each_family():
    assert (diagnosis().tool(4), diagnosis().tool(6)) == ('iptables', 'ip6tables')
