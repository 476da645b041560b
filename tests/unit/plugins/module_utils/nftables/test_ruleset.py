# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""plugins/module_utils/nftables/ruleset.py: nft -j list ruleset (recorded with the real nft) -> Live. No root."""

from __future__ import annotations

import json

import pytest

from ansible_collections.kvmnet.nat.plugins.module_utils import _backend as B
from ansible_collections.kvmnet.nat.plugins.module_utils.nftables import rules as R
from ansible_collections.kvmnet.nat.plugins.module_utils.nftables import ruleset as L
from ansible_collections.kvmnet.nat.tests.support import nftsets

LIBVIRT_FORWARD = ['counter jump guest_cross', 'counter jump guest_input', 'counter jump guest_output']


def test_libvirt_and_an_admin_table_without_ours():
    live = L.parse(nftsets.fixture('libvirt.json'), 'kvmnet_nat')
    assert live.table is None
    assert sorted(live.tables) == [('inet', 'filter'), ('ip', 'libvirt_network'), ('ip6', 'libvirt_network')]
    assert {fam: [r.text for r in rules] for fam, rules in live.libvirt.items()} == {
        'ip': LIBVIRT_FORWARD, 'ip6': LIBVIRT_FORWARD}
    assert live.accept_positions() == {'ip': [], 'ip6': []}


def test_what_was_applied_reads_back_as_rendered():
    live = L.parse(nftsets.fixture('applied.json'), 'kvmnet_nat')
    desired = R.desired_state(nftsets.all_forwards())
    assert live.table.lines() == desired.table.lines()      # every set, element, chain and rule, printed back
    assert [r.text for r in live.libvirt['ip']] == [desired.accept] + LIBVIRT_FORWARD
    assert [pos for pos, _r in live.accept_positions()['ip6']] == [0]


def test_another_name_is_not_ours():
    live = L.parse(nftsets.fixture('applied.json'), 'kvmnet_nat_test1')
    assert live.table is None


@pytest.mark.parametrize('expr, text', [
    ([{'match': {'op': '==', 'left': {'meta': {'key': 'iifname'}}, 'right': 'eth0'}}], 'iifname "eth0"'),
    ([{'match': {'op': '!=', 'left': {'payload': {'protocol': 'ip', 'field': 'daddr'}},
                 'right': {'prefix': {'addr': '192.168.122.0', 'len': 24}}}}], 'ip daddr != 192.168.122.0/24'),
    ([{'match': {'op': '==', 'left': {'&': [{'ct': {'key': 'mark'}}, 2097152]}, 'right': 2097152}}, {'accept': None}],
     'ct mark & 0x00200000 == 0x00200000 accept'),
    ([{'counter': {'packets': 12, 'bytes': 3400}}, {'jump': {'target': 'guest_cross'}}], 'counter jump guest_cross'),
    ([{'dnat': {'family': 'ip6', 'addr': '2001:db8::1', 'port': 80}}], 'dnat ip6 to [2001:db8::1]:80'),
    ([{'masquerade': None}], 'masquerade'),
    # anything the renderer does not write is never mistaken for something it does
    ([{'drop': None}], 'drop'),
    ([{'log': {'prefix': 'x'}}], '<not understood: [{"log": {"prefix": "x"}}]>'),
    ([{'match': {'op': '==', 'left': {'meta': {'key': 'mark'}}, 'right': 1}}, {'mangle': {'key': 1}}],
     '<not understood: [{"match": {"left": {"meta": {"key": "mark"}}, "op": "==", "right": 1}}, {"mangle": {"key": 1}}]>'),
])
def test_rule_printer(expr, text):
    assert L.rule_text({'expr': expr}) == text


@pytest.mark.parametrize('text', ['', 'not json', '{"rules": []}', '{"nftables": [1]}', '{"nftables": {}}'])
def test_what_is_not_nfts_json_is_refused(text):
    with pytest.raises(B.RulesetError):
        L.parse(text, 'kvmnet_nat')


def test_foreign_objects_in_our_table_are_kept_as_lines():
    data = json.loads(nftsets.fixture('applied.json'))
    data['nftables'].append({'counter': {'family': 'inet', 'table': 'kvmnet_nat', 'name': 'c', 'packets': 0}})
    data['nftables'].append({'set': {'family': 'inet', 'table': 'kvmnet_nat', 'name': 's', 'type': 'ipv4_addr',
                                     'flags': ['timeout'], 'timeout': 60}})
    lines = L.parse(json.dumps(data), 'kvmnet_nat').table.lines()
    assert 'set s type ipv4_addr' in lines
    assert 'set s has timeout, timeout' in lines
    assert any(line.startswith('counter {') for line in lines)


def test_a_libvirt_table_without_its_forward_chain():
    data = json.loads(nftsets.fixture('libvirt.json'))
    data['nftables'] = [o for o in data['nftables'] if not (
        o.get('chain', o.get('rule', {})).get('family') == 'ip6' and
        (o.get('chain', {}).get('name') == 'forward' or o.get('rule', {}).get('chain') == 'forward'))]
    live = L.parse(json.dumps(data), 'kvmnet_nat')
    assert live.libvirt['ip6'] is None and live.libvirt['ip'] is not None
