# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Hostile review of issue 21 (backend switch, nftables doctor, preflight): each test states a promise
and FAILS while the defect is there."""

from __future__ import annotations

import pytest

from ansible_collections.kvmnet.nat.plugins.module_utils import _backends as K
from ansible_collections.kvmnet.nat.plugins.module_utils._backend import RulesetError
from ansible_collections.kvmnet.nat.plugins.module_utils.nftables import backend as NB
from ansible_collections.kvmnet.nat.tests.support import nftsets
from ansible_collections.kvmnet.nat.tests.unit.plugins import fakes
# quiet_host: test_diagnose's autouse fixture (this machine's own state never reaches the doctor's checks)
from ansible_collections.kvmnet.nat.tests.unit.plugins.module_utils.nftables.test_diagnose import (  # noqa: F401  pylint: disable=unused-import
    doctor, edited, quiet_host)

# iptables-nft's table as `nft -j list ruleset` shows it (recorded in a namespace, iptables v1.8.9, nft 1.0.6):
# matches and targets nft cannot translate are {"xt": ...} statements
IPT_TABLE = {'table': {'family': 'ip', 'name': 'filter', 'handle': 90}}


def ipt_chain(policy):
    return {'chain': {'family': 'ip', 'table': 'filter', 'name': 'FORWARD', 'handle': 91, 'type': 'filter',
                      'hook': 'forward', 'prio': 0, 'policy': policy}}


def ipt_rule(handle, *expr):
    return {'rule': {'family': 'ip', 'table': 'filter', 'chain': 'FORWARD', 'handle': handle, 'expr': list(expr)}}


COUNTER = {'counter': {'packets': 0, 'bytes': 0}}
# iptables -A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
ESTABLISHED = ipt_rule(92, {'xt': {'type': 'match', 'name': 'conntrack'}}, COUNTER, {'accept': None})
# iptables -A FORWARD -d 192.168.122.10 -p tcp --dport 80 -j REJECT
REJECT_WEB = ipt_rule(93, {'match': {'op': '==', 'left': {'payload': {'protocol': 'ip', 'field': 'daddr'}},
                                     'right': '192.168.122.10'}},
                      {'match': {'op': '==', 'left': {'payload': {'protocol': 'tcp', 'field': 'dport'}}, 'right': 80}},
                      COUNTER, {'xt': {'type': 'target', 'name': 'REJECT'}})


def plus(*objs):
    def change(items):
        return items + list(objs)
    return change


def test_doctor_never_ok_where_iptables_nft_policy_drop_with_an_xt_established_accept_drops():
    """An admin's iptables-nft FORWARD: policy DROP, -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT.
    A new forwarded connection is dropped by the policy; the doctor must not say ok."""
    ruleset = edited('applied.json', plus(IPT_TABLE, ipt_chain('drop'), ESTABLISHED))
    _result, forwards = doctor(ruleset)
    verdicts = {label: item['verdict'] for label, item in forwards.items()}
    assert 'ok' not in verdicts.values(), verdicts
    # the fix in iptables-nft's own table is an iptables command (nft calls that table iptables-nft's)
    fix = forwards['web01 tcp/8080->80']['fix']
    assert 'iptables -I FORWARD 1 -m connmark --mark 0x200000/0x200000 -j ACCEPT' in fix and 'nft insert' not in fix, fix


def test_doctor_never_ok_where_an_iptables_nft_reject_refuses_one_guest():
    """iptables -A FORWARD -d 192.168.122.10 -p tcp --dport 80 -j REJECT (xt target REJECT): web01's
    port 80 is refused in the kernel."""
    ruleset = edited('applied.json', plus(IPT_TABLE, ipt_chain('accept'), REJECT_WEB))
    _result, forwards = doctor(ruleset)
    assert forwards['web01 tcp/8080->80']['verdict'] != 'ok', forwards['web01 tcp/8080->80']


def test_preflight_names_a_policy_drop_whose_mark_accept_is_not_ours():
    """The admin's forward chain drops by policy and accepts ct mark 0x1 (their own mark, not ours): every
    forward is dropped, the role's preflight must name it."""
    items = [{'chain': {'family': 'inet', 'table': 'filter', 'name': 'forward', 'hook': 'forward', 'type': 'filter',
                        'prio': 0, 'policy': 'drop'}},
             {'rule': {'family': 'inet', 'table': 'filter', 'chain': 'forward',
                       'expr': [{'match': {'op': '==', 'left': {'ct': {'key': 'mark'}}, 'right': 1}},
                                {'accept': None}]}}]
    assert K.forward_drops({'nftables': items}, 'kvmnet_nat') != []


def test_preflight_names_a_policy_drop_whose_mark_accept_comes_after_a_drop():
    """Our mark's accept is there but below a catch-all drop: never reached."""
    items = [{'chain': {'family': 'inet', 'table': 'filter', 'name': 'forward', 'hook': 'forward', 'type': 'filter',
                        'prio': 0, 'policy': 'drop'}},
             {'rule': {'family': 'inet', 'table': 'filter', 'chain': 'forward', 'expr': [{'drop': None}]}},
             {'rule': {'family': 'inet', 'table': 'filter', 'chain': 'forward',
                       'expr': [{'match': {'op': '==', 'left': {'&': [{'ct': {'key': 'mark'}}, 0x200000]},
                                           'right': 0x200000}}, {'accept': None}]}}]
    assert K.forward_drops({'nftables': items}, 'kvmnet_nat') != []


class _Ipt:
    """The iptables engine as the Switch sees it (its scopes are not opened here)."""
    scopes, saved_files, diff_header = (4, 6), {'ipv4': 'v4', 'ipv6': 'v6'}, 'iptables'

    def problems(self):
        return []


def test_auto_does_not_flip_to_iptables_when_nft_cannot_list_once():
    """A host whose libvirt uses nftables, our table loaded, network.conf without firewall_backend (Fedora's
    default). `nft -j list chains` fails once (any transient error): auto must not pick iptables - the run
    would move every forward into iptables, where libvirt's nftables reject refuses them, and delete our
    table and accept rule."""
    applied = nftsets.fixture('applied.json')
    calls = []

    def answer(command):
        calls.append(command)
        if command == 'nft -j list chains' and calls.count(command) == 1:
            return 1, '', 'Error: Could not process rule: Interrupted system call'
        listed = nftsets.listing(applied, command)
        assert listed is not None, command
        return listed
    module = fakes.FakeModule(answers=answer, binaries={'nft'})
    engine = K.Switch(module, {'iptables': _Ipt(), 'nftables': NB.Engine(module, 'KVMNAT')}, 'auto',
                      conf_path='/nonexistent/network.conf')
    with pytest.raises(RulesetError, match='backend: auto cannot tell which firewall libvirt uses'):
        engine.prepare()                # refused under the lock, before anything is read: nothing changes
    assert calls == ['nft -j list chains']
    assert engine.prepare()['backend']['name'] == 'nftables'    # the next run, nft answering, keeps nftables


def test_absent_under_another_prefix_keeps_the_accept_rule_the_default_table_needs():
    """Two chain prefixes on one host (KVMNAT's table kvmnet_nat holds forwards). `state: absent` (or a switch
    to iptables) with chain_prefix TEST1 has no table to remove, but deletes the accept rule by its comment:
    every KVMNAT forward is then refused by libvirt's reject."""
    from ansible_collections.kvmnet.nat.plugins.module_utils.nftables import plan as P, ruleset as RS
    from ansible_collections.kvmnet.nat.plugins.module_utils.nftables import rules as R
    live = RS.parse(nftsets.fixture('applied.json'), R.table_name('TEST1'))
    assert ('inet', 'kvmnet_nat') in live.tables
    got = P.plan(live, R.desired_state([], 'TEST1'))
    assert 'delete rule' not in got.payload, got.payload


def test_doctor_never_ok_where_an_ingress_chain_drops_before_prerouting():
    """An admin's ingress filter (table netdev, or inet's ingress hook) drops every packet from the public
    interface before prerouting: the doctor walks only ip/ip6/inet prerouting..postrouting and says ok."""
    ingress = [{'table': {'family': 'inet', 'name': 'edge', 'handle': 80}},
               {'chain': {'family': 'inet', 'table': 'edge', 'name': 'in', 'handle': 81, 'type': 'filter',
                          'hook': 'ingress', 'dev': 'eth0', 'prio': 0, 'policy': 'drop'}}]
    _result, forwards = doctor(edited('applied.json', plus(*ingress)))
    verdicts = {label: item['verdict'] for label, item in forwards.items()}
    assert 'ok' not in verdicts.values(), verdicts


NETDEV = [{'table': {'family': 'netdev', 'name': 'edge', 'handle': 90}},
          {'chain': {'family': 'netdev', 'table': 'edge', 'name': 'in', 'handle': 91, 'type': 'filter',
                     'hook': 'ingress', 'prio': 0, 'policy': 'accept'}}]     # nft 1.0.6 prints no "dev"


def _netdev_rule(*matches):
    return {'rule': {'family': 'netdev', 'table': 'edge', 'chain': 'in', 'handle': 92,
                     'expr': list(matches) + [{'drop': None}]}}


DPORT_8080 = {'match': {'op': '==', 'left': {'payload': {'protocol': 'tcp', 'field': 'dport'}}, 'right': 8080}}


def test_doctor_never_ok_where_a_netdev_ingress_rule_drops_the_port():
    """Recorded with nft 1.0.6 in a namespace: a netdev ingress rule on the public interface drops tcp/8080
    for every client before prerouting: that forward is broken, the others are not."""
    _result, forwards = doctor(edited('applied.json', plus(*NETDEV, _netdev_rule(DPORT_8080))))
    verdicts = {label: item['verdict'] for label, item in forwards.items()}
    assert verdicts.pop('web01 tcp/8080->80') == 'broken' and set(verdicts.values()) == {'ok'}, verdicts
