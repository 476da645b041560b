# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The host side, with canned command results: each case is the commands expected and their rc/out/err."""

from __future__ import annotations

import pytest

from ansible_collections.kvmnet.nat.plugins.module_utils import _backend as B
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables import netfilter as N
from ansible_collections.kvmnet.nat.tests.unit.plugins import fakes

EMPTY = '*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n'
RULES = '*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n-A FORWARD -j LIBVIRT_FWX\nCOMMIT\n'
USER_CHAIN = '*filter\n:FORWARD ACCEPT [0:0]\n:DOCKER - [0:0]\nCOMMIT\n'


BINARIES = {'iptables-legacy-save', 'iptables-legacy-restore', 'iptables-nft-save', 'iptables-nft-restore',
            'iptables-save', 'iptables-restore', 'ip'}


def FakeModule(answers, binaries=None):  # noqa: N802  (reads like the class it builds)
    return fakes.FakeModule(answers=answers, binaries=BINARIES if binaries is None else binaries)


@pytest.mark.parametrize('legacy, nft, default, expected', [
    (EMPTY, EMPTY, 'iptables-save v1.8.9 (nf_tables)', 'nft'),      # nothing in use: the host default
    (EMPTY, EMPTY, 'iptables-save v1.8.9 (legacy)', 'legacy'),
    (RULES, EMPTY, 'iptables-save v1.8.9 (nf_tables)', 'legacy'),   # rules decide, not the default
    (EMPTY, USER_CHAIN, 'iptables-save v1.8.9 (legacy)', 'nft'),    # a user chain counts as in use
])
def test_detect_picks_the_flavour_in_use(legacy, nft, default, expected):
    module = FakeModule({'iptables-legacy-save': (0, legacy, ''), 'iptables-nft-save': (0, nft, ''),
                         'iptables-save --version': (0, default, '')})
    backend = N.detect(module, 4, legacy=lambda family: None)
    assert backend.flavour == expected
    assert backend.restore_cmd == ['/usr/sbin/iptables-%s-restore' % expected]
    assert backend.saved == (legacy if expected == 'legacy' else nft)


@pytest.mark.parametrize('tables, reads', [([], ['iptables-nft-save']),
                                           (['filter'], ['iptables-legacy-save', 'iptables-nft-save']),
                                           (None, ['iptables-legacy-save', 'iptables-nft-save'])])
def test_detect_reads_legacy_only_when_the_kernel_shows_it_holds_a_table(tables, reads):
    module = FakeModule({'iptables-legacy-save': (0, EMPTY, ''), 'iptables-nft-save': (0, RULES, '')})
    assert N.detect(module, 4, legacy=lambda family: tables).flavour == 'nft'
    assert [command.split()[0] for command in module.commands()] == reads


def test_detect_refuses_rules_in_both_flavours():
    module = FakeModule({'iptables-legacy-save': (0, RULES, ''), 'iptables-nft-save': (0, USER_CHAIN, '')})
    with pytest.raises(B.RulesetError) as exc:
        N.detect(module, 4, legacy=lambda family: None)
    assert 'both iptables-legacy and iptables-nft' in str(exc.value)


def test_detect_without_any_tool_for_the_family():
    assert N.detect(FakeModule({}, binaries=set()), 6) is None


def test_detect_falls_back_to_the_generic_tools():
    module = FakeModule({'iptables-save --version': (0, 'iptables-save v1.8.4 (legacy)', ''),
                         'iptables-save': (0, EMPTY, '')}, binaries={'iptables-save', 'iptables-restore'})
    backend = N.detect(module, 4, legacy=lambda family: None)
    assert (backend.flavour, backend.save_cmd) == ('legacy', ['/usr/sbin/iptables-save'])


@pytest.mark.parametrize('binaries', [{'iptables-nft-save'}, {'iptables-save'}])
def test_detect_needs_the_restore_tool_of_the_flavour_it_reads(binaries):
    module = FakeModule({'iptables-save --version': (0, 'iptables-save v1.8.9 (nf_tables)', ''),
                         'iptables-nft-save': (0, EMPTY, ''), 'iptables-save': (0, EMPTY, '')}, binaries=binaries)
    assert N.detect(module, 4, legacy=lambda family: None) is None


def test_restore_test_run_arguments():
    module = FakeModule({'iptables-nft-restore': (0, '', '')})
    tools = N.Tools(4, 'nft', ['/usr/sbin/iptables-nft-save'], ['/usr/sbin/iptables-nft-restore'])
    N.restore(module, tools, '*nat\nCOMMIT\n', 10, test=True)
    assert module.calls == [('iptables-nft-restore --noflush --wait 10 --test', '*nat\nCOMMIT\n')]


def test_restore_error_names_the_rule_the_command_and_stderr():
    payload = ('*nat\n:KVMNAT_DNAT - [0:0]\n-A KVMNAT_DNAT -d 203.0.113.10/32 -p tcp -m tcp --dport 8080 '
               '-m comment --comment "kvmnet.nat: web01 tcp/8080->80" -j DNAT --to-destination 192.168.122.10:80\n'
               'COMMIT\n')
    stderr = 'iptables-restore v1.8.9 (nf_tables): unknown option "--dport"\nError occurred at line: 3\n'
    module = FakeModule({'iptables-nft-restore': (2, '', stderr)})
    tools = N.Tools(4, 'nft', ['iptables-nft-save'], ['/usr/sbin/iptables-nft-restore'])
    with pytest.raises(N.CommandError) as exc:
        N.restore(module, tools, payload, 10, test=True)
    text = str(exc.value)
    assert text.startswith('applying IPv4 rules (test run), at rule "-A KVMNAT_DNAT')
    assert 'kvmnet.nat: web01 tcp/8080->80' in text
    assert '/usr/sbin/iptables-nft-restore --noflush --wait 10 --test failed (rc=2)' in text
    assert 'unknown option "--dport"' in text
