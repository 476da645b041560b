# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""plugins/module_utils/nftables/plan.py: the one transaction from live to desired. No root, no host."""

from __future__ import annotations

import copy
import json

import pytest

from ansible_collections.kvmnet.nat.plugins.module_utils.nftables import plan as P
from ansible_collections.kvmnet.nat.plugins.module_utils.nftables import rules as R
from ansible_collections.kvmnet.nat.plugins.module_utils.nftables import ruleset as L
from ansible_collections.kvmnet.nat.tests.support import nftsets

ACCEPT = R.ACCEPT_RULE


def applied():
    return json.loads(nftsets.fixture('applied.json'))


def live_of(data):
    return L.parse(json.dumps(data), 'kvmnet_nat')


def desired():
    return R.desired_state(nftsets.all_forwards())


def test_fresh_host():
    result = P.plan(L.parse(nftsets.fixture('libvirt.json'), 'kvmnet_nat'), desired())
    lines = result.payload.splitlines()
    assert result.changed
    assert lines[:3] == ['table inet kvmnet_nat', 'delete table inet kvmnet_nat', 'table inet kvmnet_nat {']
    assert lines[-2:] == ['insert rule ip libvirt_network forward ' + ACCEPT, 'insert rule ip6 libvirt_network forward ' + ACCEPT]
    assert not any('flush' in line or line.startswith(('add table ip', 'add chain', 'delete table ip')) for line in lines)
    assert result.reasons == ['table inet kvmnet_nat created', 'ip libvirt_network forward: accept rule added',
                              'ip6 libvirt_network forward: accept rule added']
    assert result.before == [] and result.after[-1] == 'ip6 libvirt_network forward[1] ' + ACCEPT


def test_no_op_on_what_was_applied():
    result = P.plan(live_of(applied()), desired())
    assert (result.changed, result.payload, result.reasons) == (False, '', [])
    assert result.before == result.after


def _objects(data, kind, **match):
    return [o[kind] for o in data['nftables'] if kind in o and all(o[kind].get(k) == v for k, v in match.items())]


def drop_element(data):
    _objects(data, 'map', name='port4')[0]['elem'].pop()


def change_element(data):
    _objects(data, 'map', name='port4')[0]['elem'][0][1]['concat'][1] = 81


def extra_rule(data):
    data['nftables'].append({'rule': {'family': 'inet', 'table': 'kvmnet_nat', 'chain': 'dispatch', 'handle': 999,
                                      'expr': [{'accept': None}]}})


def extra_chain(data):
    data['nftables'].append({'chain': {'family': 'inet', 'table': 'kvmnet_nat', 'name': 'mine', 'handle': 998}})


def accept_second(data):
    rules = [o for o in data['nftables'] if o.get('rule', {}).get('chain') == 'forward' and o['rule']['family'] == 'ip']
    first, second = data['nftables'].index(rules[0]), data['nftables'].index(rules[1])
    data['nftables'][first], data['nftables'][second] = data['nftables'][second], data['nftables'][first]


def accept_twice(data):
    rule = [o for o in data['nftables'] if o.get('rule', {}).get('comment') == R.ACCEPT_COMMENT][0]
    twin = copy.deepcopy(rule)
    twin['rule']['handle'] = 777
    data['nftables'].append(twin)


def accept_other_bit(data):
    rule = [o for o in data['nftables'] if o.get('rule', {}).get('comment') == R.ACCEPT_COMMENT][0]
    rule['rule']['expr'][0]['match']['right'] = 1


def accept_not_understood(data):
    rule = [o for o in data['nftables'] if o.get('rule', {}).get('comment') == R.ACCEPT_COMMENT][0]
    rule['rule']['expr'] = [{'log': {'prefix': 'x'}}, {'accept': None}]


def accept_gone(data):
    data['nftables'] = [o for o in data['nftables'] if o.get('rule', {}).get('comment') != R.ACCEPT_COMMENT]


@pytest.mark.parametrize('mutate, reason, table_replaced, accept_lines', [
    (drop_element, 'table inet kvmnet_nat replaced: 1 item(s) added, 0 dropped', True, []),
    (change_element, 'table inet kvmnet_nat: dropped map port4 element 203.0.113.10 . tcp . 10000 : 192.168.122.12 . 81',
     True, []),
    (extra_rule, 'table inet kvmnet_nat: dropped chain dispatch rule accept', True, []),
    (extra_chain, 'table inet kvmnet_nat: dropped chain mine', True, []),
    (accept_second, 'ip libvirt_network forward: accept rule was at position 2, moved back to 1', False,
     ['delete rule ip libvirt_network forward handle %d', 'insert rule ip libvirt_network forward ' + ACCEPT]),
    (accept_twice, 'ip libvirt_network forward: 2 accept rules of kvmnet.nat, keeping one, first', False,
     ['delete rule ip libvirt_network forward handle %d', 'delete rule ip libvirt_network forward handle 777',
      'insert rule ip libvirt_network forward ' + ACCEPT]),
    (accept_other_bit, 'ip libvirt_network forward: accept rule differs', False,
     ['delete rule ip libvirt_network forward handle %d', 'insert rule ip libvirt_network forward ' + ACCEPT]),
    (accept_not_understood, 'ip libvirt_network forward: accept rule differs (<not understood: ', False,
     ['delete rule ip libvirt_network forward handle %d', 'insert rule ip libvirt_network forward ' + ACCEPT]),
    (accept_gone, 'ip libvirt_network forward: accept rule added', False,
     ['insert rule ip libvirt_network forward ' + ACCEPT, 'insert rule ip6 libvirt_network forward ' + ACCEPT]),
])
def test_drift_is_seen_and_repaired(mutate, reason, table_replaced, accept_lines):
    data = applied()
    handle = [o['rule']['handle'] for o in data['nftables'] if o.get('rule', {}).get('comment') == R.ACCEPT_COMMENT
              and o['rule']['family'] == 'ip'][0]
    mutate(data)
    result = P.plan(live_of(data), desired())
    assert result.changed
    assert any(r.startswith(reason) for r in result.reasons), result.reasons
    lines = result.payload.splitlines()
    assert (lines[:2] == ['table inet kvmnet_nat', 'delete table inet kvmnet_nat']) == table_replaced
    ours = [line for line in lines if 'libvirt_network' in line]
    assert ours == [line % handle if '%d' in line else line for line in accept_lines]


def test_absent_removes_our_table_and_the_accept_rules():
    result = P.plan(live_of(applied()), R.desired_state([]))
    lines = result.payload.splitlines()
    assert lines[:2] == ['table inet kvmnet_nat', 'delete table inet kvmnet_nat'] and len(lines) == 4
    assert all(line.startswith('delete rule ip') and ' libvirt_network forward handle ' in line for line in lines[2:])
    assert result.after == []


def test_absent_on_a_host_without_our_table_is_a_no_op():
    result = P.plan(L.parse(nftsets.fixture('libvirt.json'), 'kvmnet_nat'), R.desired_state([]))
    assert (result.changed, result.payload) == (False, '')


def test_libvirt_tables_and_chains_are_never_created():
    data = applied()
    data['nftables'] = [o for o in data['nftables'] if 'libvirt_network' not in json.dumps(o)]
    live = live_of(data)
    assert live.libvirt == {}
    assert P.plan(live, desired()).payload == ''            # our table as desired; nowhere to put the rule
    live.libvirt['ip6'] = None                              # libvirt's table without its forward chain
    assert P.plan(live, desired()).payload == ''


def test_only_the_accept_rule_when_the_table_is_right():
    data = applied()
    accept_gone(data)
    assert P.plan(live_of(data), desired()).payload == (
        'insert rule ip libvirt_network forward %s\ninsert rule ip6 libvirt_network forward %s\n' % (ACCEPT, ACCEPT))
