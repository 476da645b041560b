# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""kvmnet.nat.doctor on an nftables host, without root: the whole module against recorded ``nft -j list
ruleset`` output (tests/netns/record_nft_fixtures.py): a healthy host, our accept rule missing or below
libvirt's jumps, an admin's table dropping one guest's port, an admin's ``table inet filter`` with
``policy drop`` on forward (and the same with the accept for our mark), a rule the walker cannot read."""

from __future__ import annotations

import json

import pytest

from ansible_collections.kvmnet.nat.plugins.module_utils import _connect
from ansible_collections.kvmnet.nat.plugins.module_utils import _host
from ansible_collections.kvmnet.nat.plugins.module_utils import _listeners
from ansible_collections.kvmnet.nat.plugins.module_utils.nftables import diagnose as ND
from ansible_collections.kvmnet.nat.plugins.module_utils.nftables import rules as R
from ansible_collections.kvmnet.nat.plugins.modules import doctor as M
from ansible_collections.kvmnet.nat.tests.support import nftsets
from ansible_collections.kvmnet.nat.tests.support.rulesets import ISSUE_EXAMPLE, PUB
from ansible_collections.kvmnet.nat.tests.unit.plugins import fakes

ADDR = ('[{"ifname":"virbr0","addr_info":[{"local":"192.168.122.1","prefixlen":24}]},'
        '{"ifname":"eth0","addr_info":[{"local":"203.0.113.10","prefixlen":24}]}]')
DEFAULT4 = '[{"dst":"default","gateway":"203.0.113.1","dev":"eth0","prefsrc":"203.0.113.10"}]'
# no guest is on a connected route here: the doctor adds no hairpin the recorded table does not have
ROUTE = '[{"dst":"192.168.122.10","gateway":"203.0.113.1","dev":"eth0"}]'
PARAMS = {'public_ip': PUB, 'public_ip6': None, 'in_interface': None, 'chain_prefix': 'KVMNAT', 'persist_path': None,
          'uri': 'qemu:///system', 'guest': None, 'port': None, 'probe': False, 'timeout': 2.0, 'backend': 'auto'}
LABELS = ['web01 tcp/8080->80', 'web01 tcp/2222->22', 'dns01 udp/5353->53', 'app01 tcp/10000-10009->20000-20009',
          'app02 tcp/8443->443']
MARK_FIX = 'nft insert rule %%s ct mark and 0x%08x == 0x%08x accept' % (R.ACCEPT_MARK, R.ACCEPT_MARK)


@pytest.fixture(autouse=True)
def quiet_host(monkeypatch):
    monkeypatch.setattr(_connect, 'probe', lambda host, port, proto, send, timeout: ('answer', ''))
    monkeypatch.setattr(_host, 'sysctls', lambda: {'ipv4_forward': '1', 'ipv6_forward': '1', 'rp_filter': {},
                                                   'bridge_nf': None})
    monkeypatch.setattr(_listeners, 'read_listeners', lambda: [])
    monkeypatch.setattr(_host, 'process_running', lambda name: False)


def edited(name, change):
    """A recorded fixture with ``change`` applied to its objects (a list of one-key dicts)."""
    data = json.loads(nftsets.fixture(name))
    data['nftables'] = change(data['nftables'])
    return json.dumps(data)


def without_accept(items):
    return [item for item in items if item.get('rule', {}).get('comment') != R.ACCEPT_COMMENT]


def with_rule(table, chain, expr, first=False):
    """Add a rule (nft JSON ``expr``) to ``inet table chain``, first or last."""
    def change(items):
        rule = {'rule': {'family': 'inet', 'table': table, 'chain': chain, 'handle': 999, 'expr': expr}}
        at = [i for i, item in enumerate(items) if item.get('rule', {}).get('table') == table and
              item['rule'].get('chain') == chain]
        items.insert(at[0] if first else at[-1] + 1, rule)
        return items
    return change


MARK_ACCEPT = [{'match': {'left': {'&': [{'ct': {'key': 'mark'}}, R.ACCEPT_MARK]}, 'op': '==', 'right': R.ACCEPT_MARK}},
               {'accept': None}]
META_MARK_DROP = [{'match': {'left': {'meta': {'key': 'mark'}}, 'op': '==', 'right': 7}}, {'drop': None}]


def doctor(ruleset, **params):
    def answer(command):
        listed = nftsets.listing(ruleset, command)
        if listed is not None:
            return listed
        for prefix, out in (('ip -j addr show', ADDR), ('ip -j -4 route show default', DEFAULT4),
                            ('ip -j -6 route show default', '[]'), ('ip -j -4 route get', ROUTE)):
            if command.startswith(prefix):
                return 0, out, ''
        raise AssertionError('unexpected command: %s' % command)
    module = fakes.FakeModule(dict(PARAMS, forwards=[dict(f) for f in ISSUE_EXAMPLE], **params), answer,
                              check_mode=True, binaries={'ip', 'nft'})
    result = fakes.result_of(M.run, module)
    assert not result.get('failed'), result.get('msg')
    assert not [c for c in module.commands() if c.startswith('nft') and ' list ' not in c]     # reads only
    return result, {item['label']: item for item in result['forwards']}


def test_a_healthy_host_is_all_green_and_says_which_backend():
    result, forwards = doctor(nftsets.fixture('applied.json'))
    assert result['backend']['name'] == 'nftables' and 'libvirt_network is loaded' in result['backend']['reason']
    assert sorted(forwards) == sorted(LABELS)
    assert {label: item['verdict'] for label, item in forwards.items()} == dict.fromkeys(LABELS, 'ok'), \
        [item['causes'] for item in forwards.values()]
    web = forwards['web01 tcp/8080->80']['checks']
    assert web['layout'] == {'ok': True, 'detail': 'nftables: nftables'}
    assert web['jumps']['ok'] is True and 'ip libvirt_network forward: first' in web['jumps']['detail']
    assert 'DNAT: chain inet kvmnet_nat prerouting rule 1 -> chain inet kvmnet_nat dispatch rule' in web['rules']['detail']
    assert '[-> 192.168.122.10:80]' in web['rules']['detail']
    assert 'accept: chain ip libvirt_network forward rule 1' in web['rules']['detail']
    assert 'hairpin: chain inet kvmnet_nat postrouting rule 1' in web['rules']['detail']
    assert 'iptables' not in json.dumps(result['forwards'])


@pytest.mark.parametrize('name, ruleset, jumps', [
    ('missing', edited('applied.json', without_accept), 'Our hook rule in ip libvirt_network forward is missing'),
    ('misplaced', nftsets.fixture('doctor-misplaced.json'),
     'Above our hook rule in ip libvirt_network forward, chain ip libvirt_network forward rule 2 -> '),
])
def test_without_our_accept_first_libvirts_reject_breaks_every_forward(name, ruleset, jumps):
    result, forwards = doctor(ruleset)
    assert sorted(result['broken']) == sorted(LABELS), name
    for label, item in forwards.items():
        assert (item['verdict'], item['failed']) == ('broken', 'jumps'), (label, item['causes'])
        assert item['cause'].startswith(jumps), item['cause']
        rules = [c for c in item['causes'] if c['check'] == 'rules'][0]
        assert 'chain ip libvirt_network guest_input rule 2 (oif "virbr0" counter reject)' in rules['cause'], rules
        assert rules['fix'].startswith("kvmnet.nat's accept rule must be first in ip libvirt_network forward")
        assert 'iptables' not in json.dumps(item)


def test_an_admins_drop_for_one_guest_breaks_that_guests_forwards_only():
    result, forwards = doctor(nftsets.fixture('doctor-admin-drop.json'))
    assert result['broken'] == ['dns01 udp/5353->53']
    dns = forwards['dns01 udp/5353->53']
    assert dns['failed'] == 'rules'
    assert dns['cause'] == ('chain inet guards forward rule 1 (ip daddr 192.168.122.11 udp dport 53 counter drop comment '
                            '"admin: no dns from outside") drops udp/5353 to dns01 192.168.122.11.')
    assert MARK_FIX % 'inet guards forward' in dns['fix']
    assert forwards['web01 tcp/8080->80']['verdict'] == 'ok'


def test_an_admins_policy_drop_is_named_with_the_rule_to_add():
    result, forwards = doctor(nftsets.fixture('doctor-policy-drop.json'))
    assert sorted(result['broken']) == sorted(LABELS)
    web = forwards['web01 tcp/8080->80']
    assert web['failed'] == 'rules'
    assert web['cause'] == 'chain inet filter forward (policy drop) drops tcp/8080 to web01 192.168.122.10.'
    assert MARK_FIX % 'inet filter forward' in web['fix'] and 'cannot override a drop in another table' in web['fix']


def test_with_the_accept_for_our_mark_the_admins_policy_drop_lets_the_forwards_through():
    fixed = edited('doctor-policy-drop.json', with_rule('filter', 'forward', MARK_ACCEPT, first=True))
    result, _forwards = doctor(fixed)
    assert result['broken'] == [], [f['causes'] for f in result['forwards']]


def test_a_rule_the_walker_cannot_read_is_never_ok():
    """A drop on a packet mark in another table: it may stop the packets, so the verdict is unknown, naming it."""
    doubtful = edited('doctor-admin-drop.json', with_rule('guards', 'forward', META_MARK_DROP, first=True))
    result, forwards = doctor(doubtful, guest='web01', port=8080)
    web = forwards['web01 tcp/8080->80']
    assert web['verdict'] == 'unknown' and web['failed'] == 'rules', web['causes']
    assert 'chain inet guards forward rule 1 (meta mark 7 drop) was not evaluated' in web['cause']
    assert 'nft -a list chain inet guards forward' in web['fix']


def test_a_host_whose_libvirt_uses_iptables_is_named_when_nftables_is_asked_for():
    chains = {'nftables': [{'chain': {'family': 'ip', 'table': 'filter', 'name': 'LIBVIRT_FWI'}}]}
    _result, forwards = doctor(json.dumps(chains), backend='nftables', guest='web01', port=8080)
    web = forwards['web01 tcp/8080->80']
    assert web['failed'] == 'layout' and 'libvirt\'s network driver uses its iptables firewall backend' in web['cause']


@pytest.mark.parametrize('spec, destination', [
    ('ip daddr . meta l4proto . th dport @port4 dnat ip to ip daddr . meta l4proto . th dport map @port4 '
     '[-> 192.168.122.10:80]', ('192.168.122.10', 80)),
    ('meta l4proto tcp dnat ip6 to [2001:db8:122::10]:22 comment "x"', ('2001:db8:122::10', 22)),
    ('iifname "eth0" meta l4proto tcp dnat ip to 192.168.122.10', ('192.168.122.10', None)),
    ('counter accept', (None, None)),
])
def test_the_destination_of_a_nat_rule(spec, destination):
    assert ND.destination(spec) == destination
