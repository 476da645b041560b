# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""plugins/module_utils/_backends.py: which backend ``auto`` picks, and the Switch engine. No root, no host."""

from __future__ import annotations

import json

import pytest

from ansible_collections.kvmnet.nat.plugins.module_utils import _backends as K
from ansible_collections.kvmnet.nat.plugins.module_utils._backend import BackendUnavailable, RulesetError
from ansible_collections.kvmnet.nat.tests.unit.plugins import fakes


def chain(family, table, name):
    return {'chain': {'family': family, 'table': table, 'name': name, 'handle': 1}}


LIBVIRT_NFT = [chain('ip', 'libvirt_network', 'forward'), chain('ip6', 'libvirt_network', 'forward')]
LIBVIRT_IPT = [chain('ip', 'filter', 'FORWARD'), chain('ip', 'filter', 'LIBVIRT_FWI'), chain('ip', 'nat', 'LIBVIRT_PRT')]
OURS = [chain('inet', 'kvmnet_nat', 'prerouting')]
ADMIN = [chain('inet', 'filter', 'forward')]


@pytest.mark.parametrize('objects, conf, name, says', [
    (LIBVIRT_NFT, None, 'nftables', 'table ip libvirt_network is loaded'),
    (LIBVIRT_IPT + LIBVIRT_NFT, 'firewall_backend = "iptables"\n', 'nftables', 'table ip libvirt_network'),
    (LIBVIRT_IPT, 'firewall_backend = "nftables"\n', 'iptables', 'chain LIBVIRT_FWI of table ip filter'),
    (ADMIN, 'firewall_backend = "nftables"\n', 'nftables', 'sets firewall_backend = "nftables"'),
    (OURS, '# firewall_backend = "nftables"\nfirewall_backend = "iptables"  # ours\n', 'iptables',
     'sets firewall_backend = "iptables"'),
    (OURS, '#firewall_backend = "nftables"\n', 'nftables', 'an earlier run chose nftables'),
    (ADMIN, None, 'iptables', 'neither'),
    (None, None, 'iptables', 'neither'),                    # no nft at all
    ([chain('inet', 'kvmnet_nat_other', 'x')], 'firewall_backend = "bogus"\n', 'iptables', 'neither'),
])
def test_auto_decides_in_the_documented_order(objects, conf, name, says):
    choice = K.choose('auto', objects, conf, 'kvmnet_nat')
    assert (choice.name, choice.requested) == (name, 'auto') and says in choice.reason, choice.reason


@pytest.mark.parametrize('requested', ['iptables', 'nftables'])
def test_a_backend_asked_for_is_taken_and_libvirts_is_still_reported(requested):
    choice = K.choose(requested, LIBVIRT_IPT, 'firewall_backend = "nftables"', 'kvmnet_nat')
    assert choice.result() == {'name': requested, 'requested': requested, 'libvirt': 'iptables',
                               'reason': 'backend: %s was asked for' % requested}
    assert bool(K.mismatch(choice)) is (requested == 'nftables')
    assert K.mismatch(K.choose(requested, LIBVIRT_NFT, None, 'kvmnet_nat')) is None


class Engine:
    def __init__(self, name, scopes, saved, problems=()):
        self.name, self.scopes, self.saved_files, self._problems = name, scopes, saved, list(problems)
        self.diff_header = name + ' rules'
        self.opened = []

    def problems(self):
        return self._problems

    def table(self):
        return 'kvmnet_nat'

    def open(self, scope):
        if scope == 6:
            raise BackendUnavailable('no ip6tables')
        self.opened.append(scope)
        return Backend(self.name, scope)


class Backend:
    def __init__(self, name, scope):
        self.name, self.key = name, scope

    def desired(self, forwards):
        return (self.name, tuple(forwards))


def switch(module, requested='auto'):
    engines = {'iptables': Engine('iptables', (4, 6), {'ipv4': 'v4', 'ipv6': 'v6'}, ['bad prefix']),
               'nftables': Engine('nftables', ('inet',), {'inet': 'nft'})}
    return K.Switch(module, engines, requested, conf_path='/nonexistent/network.conf'), engines


def test_the_switch_carries_the_forwards_in_the_chosen_backend_and_empties_the_other():
    module = fakes.FakeModule(answers={'nft -j list chains': (0, json.dumps({'nftables': LIBVIRT_NFT}), '')})
    engine, engines = switch(module)
    assert engine.saved_files == {'ipv4': 'v4', 'ipv6': 'v6', 'inet': 'nft'}    # known before the choice
    assert engine.problems() == ['bad prefix']
    assert engine.prepare()['backend']['name'] == 'nftables'
    assert engine.scopes == ('inet', 4, 6) and engine.forward_scopes == ('inet',)
    assert engine.diff_header == 'nftables rules'
    assert engine.open('inet').desired(['f']) == ('nftables', ('f',))
    retired = engine.open(4)
    assert retired.desired(['f']) == ('iptables', ()) and retired.key == 4      # nothing desired, the rest as is
    with pytest.raises(BackendUnavailable):
        engine.open(6)
    assert module.warnings == []


def test_nftables_beside_libvirts_iptables_is_refused_unless_removing_and_iptables_beside_nftables_warns():
    module = fakes.FakeModule(answers={'nft -j list chains': (0, json.dumps({'nftables': LIBVIRT_IPT}), '')})
    engine, _engines = switch(module, 'nftables')
    with pytest.raises(RulesetError, match='backend nftables cannot work here'):
        engine.prepare()
    assert engine.prepare(removing=True)['backend']['name'] == 'nftables'
    module = fakes.FakeModule(answers={'nft -j list chains': (0, json.dumps({'nftables': LIBVIRT_NFT}), '')})
    engine, _engines = switch(module, 'iptables')
    assert engine.prepare()['backend']['name'] == 'iptables'
    assert len(module.warnings) == 1 and 'table ip libvirt_network is loaded' in module.warnings[0]


def test_read_choice_reads_network_conf_and_survives_a_broken_nft(tmp_path):
    conf = tmp_path / 'network.conf'
    conf.write_text('firewall_backend = "nftables"\n')
    module = fakes.FakeModule(answers={'nft -j list chains': (1, '', 'netlink: Error')})
    with pytest.raises(RulesetError, match='netlink: Error'):      # auto cannot tell: refused, not guessed
        K.read_choice(module, 'auto', 'kvmnet_nat', str(conf))
    assert K.read_choice(module, 'iptables', 'kvmnet_nat', str(conf)).name == 'iptables'
    module = fakes.FakeModule(answers={'nft -j list chains': (0, 'not json', '')})
    with pytest.raises(RulesetError):
        K.read_choice(module, 'auto', 'kvmnet_nat', str(tmp_path / 'none'))
    assert K.read_choice(fakes.FakeModule(binaries=set()), 'auto', 'kvmnet_nat', str(conf)).name == 'nftables'


def rule(family, table, name, *exprs):
    return {'rule': {'family': family, 'table': table, 'chain': name, 'expr': list(exprs)}}


def base(family, table, name, policy, hook='forward'):
    return {'chain': {'family': family, 'table': table, 'name': name, 'hook': hook, 'type': 'filter',
                      'prio': 0, 'policy': policy}}


MARK_ACCEPT = ({'match': {'op': '==', 'left': {'&': [{'ct': {'key': 'mark'}}, 2097152]}, 'right': 2097152}},
               {'accept': None})


@pytest.mark.parametrize('items, found', [
    ([base('inet', 'filter', 'forward', 'drop')],
     [('inet filter', 'forward', 'nft insert rule inet filter forward ct mark and 0x00200000 == 0x00200000 accept')]),
    ([base('ip', 'filter', 'FORWARD', 'drop')],                      # iptables-nft's FORWARD with policy DROP
     [('ip filter', 'FORWARD', 'iptables -I FORWARD 1 -m connmark --mark 0x200000/0x200000 -j ACCEPT')]),
    ([base('inet', 'filter', 'forward', 'drop'), rule('inet', 'filter', 'forward', *MARK_ACCEPT)], []),  # admin added it
    ([base('inet', 'filter', 'forward', 'accept')], []),
    ([base('inet', 'filter', 'input', 'drop', hook='input')], []),  # INPUT is not ours to judge
    ([base('ip', 'libvirt_network', 'forward', 'drop'), base('inet', 'kvmnet_nat', 'forward', 'drop')], []),
])
def test_forward_drops_names_each_policy_drop_of_another_table_with_its_fix(items, found):
    got = K.forward_drops({'nftables': items}, 'kvmnet_nat')
    assert [(d['table'], d['chain'], d['fix']) for d in got] == found
