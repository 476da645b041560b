# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""plugins/module_utils/iptables/save.py: iptables-save text parsed, on recorded text. No root, no host."""

from __future__ import annotations

import pytest

from ansible_collections.kvmnet.nat.plugins.module_utils import _backend as B
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables import save as S
from ansible_collections.kvmnet.nat.tests.support.rulesets import fixture


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
