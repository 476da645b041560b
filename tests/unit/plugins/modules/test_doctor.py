# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""kvmnet.nat.doctor as a whole, without root: it reads the ruleset once per family whatever the number
of forwards, runs no command that changes anything, and refuses bad parameters before reading."""

from __future__ import annotations

import hashlib

import pytest

from ansible_collections.kvmnet.nat.plugins.module_utils import _connect
from ansible_collections.kvmnet.nat.plugins.module_utils import _forward as F
from ansible_collections.kvmnet.nat.plugins.module_utils import _host
from ansible_collections.kvmnet.nat.plugins.module_utils import _listeners
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables import diagnose as I
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables import rules as R
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables import save as S
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables.backend import Engine
from ansible_collections.kvmnet.nat.plugins.modules import doctor as M
from ansible_collections.kvmnet.nat.tests.unit.plugins import fakes

ADDR = ('[{"ifname":"virbr0","addr_info":[{"local":"192.168.122.1","prefixlen":24}]},'
        '{"ifname":"eth0","addr_info":[{"local":"203.0.113.10","prefixlen":24}]}]')
DEFAULT4 = '[{"dst":"default","gateway":"203.0.113.1","dev":"eth0","prefsrc":"203.0.113.10"}]'
LIBVIRT = """*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
COMMIT
*filter
:FORWARD ACCEPT [0:0]
:LIBVIRT_FWI - [0:0]
[0:0] -A FORWARD -j LIBVIRT_FWI
[0:0] -A LIBVIRT_FWI -o virbr0 -j REJECT --reject-with icmp-port-unreachable
COMMIT
"""
DEFAULTS = {'public_ip': None, 'public_ip6': None, 'in_interface': None, 'chain_prefix': 'KVMNAT',
            'persist_path': None, 'uri': 'qemu:///system', 'guest': None, 'port': None, 'probe': False, 'timeout': 2.0,
            'backend': 'auto'}
BINARIES = {'iptables-nft-save', 'ip6tables-nft-save', 'ip', 'nft'}


def declared(n):
    return [{'guest': 'g%d' % (i % 3), 'guest_ip': '192.168.122.%d' % (10 + i % 3), 'host_port': 10000 + i,
             'guest_port': 80, 'proto': 'tcp', 'sources': [], 'masquerade': 'auto'} for i in range(n)]


def live(n):
    """libvirt's rules with ours as the engine writes them for ``n`` forwards, as iptables-save -c prints them."""
    tables = S.parse_save(LIBVIRT)
    applied = [dict(f, guest_network='192.168.122.0/24') for f in declared(n)]    # as kvmnet.nat.forwards found it
    desired = R.desired_state(F.parse_forwards(applied, public_ip='203.0.113.10'), 4)
    lines = []
    for table in ('nat', 'filter'):
        lines.append('*' + table)
        lines.extend(':%s %s [0:0]' % (c, p) for c, p in tables[table].chains.items())
        lines.extend(':%s - [0:0]' % c for (t, c) in desired.chains if t == table)
        for t, chain, spec in desired.jumps:
            if t == table:
                lines.append('[0:0] -A %s %s' % (chain, spec))
        lines.extend('[0:0] -A %s %s' % (c, s) for c, rules in tables[table].rules.items() for s in rules)
        lines.extend('[0:0] -A %s %s' % (c, s) for (t, c), rules in desired.chains.items() if t == table for s in rules)
        lines.append('COMMIT')
    return '\n'.join(lines) + '\n'


@pytest.fixture
def quiet_host(monkeypatch):
    """No packet leaves this machine: guest connections are answered here; sysctls and listeners are canned."""
    connects = []

    def probe(host, port, proto, send, timeout):
        connects.append((host, port, proto))
        return 'answer', ''
    monkeypatch.setattr(_connect, 'probe', probe)
    monkeypatch.setattr(_host, 'sysctls', lambda: {'ipv4_forward': '1', 'ipv6_forward': '1', 'rp_filter': {},
                                                   'bridge_nf': None})
    monkeypatch.setattr(_listeners, 'read_listeners', lambda: [])
    monkeypatch.setattr(_host, 'process_running', lambda name: False)
    return connects


def answers(n):
    return {'ip -j addr show': (0, ADDR, ''), 'ip -j -4 route show default': (0, DEFAULT4, ''),
            'ip -j -6 route show default': (0, '[]', ''),
            'ip -j -4 route get 192.168.122.': (0, '[{"dst":"192.168.122.10","dev":"virbr0"}]', ''),
            'iptables-nft-save -c': (0, live(n), ''), 'ip6tables-nft-save -c': (0, '', ''),
            'nft -j list ruleset': (0, '{"nftables": []}', ''), 'nft -j list chains': (0, '{"nftables": []}', '')}


@pytest.mark.parametrize('n', [1, 300])
def test_one_read_per_family_and_nothing_that_changes_anything(quiet_host, n):
    module = fakes.FakeModule(dict(DEFAULTS, forwards=declared(n)), answers(n), check_mode=True, binaries=BINARIES)
    result = fakes.result_of(M.run, module)
    assert result['changed'] is False and result['broken'] == [], [f['causes'] for f in result['forwards']][:1]
    assert len(result['forwards']) == n and result['host']['public_ip'] == '203.0.113.10'
    commands = module.commands()
    assert commands.count('iptables-nft-save -c') == 1 and commands.count('ip6tables-nft-save -c') == 1
    assert not [c for c in commands if 'restore' in c or ' -I ' in c or ' -D ' in c or 'sysctl' in c]
    assert len([c for c in commands if c.startswith('ip -j -4 route get')]) == min(n, 3)   # one per guest address
    assert sorted(set(quiet_host)) == sorted(quiet_host) and len(quiet_host) == min(n, 3)  # one connect per guest port
    assert result['table'][0].startswith('forward')


def test_the_saved_file_is_compared_once_per_family_not_per_forward(quiet_host, monkeypatch, tmp_path):
    """Rendering what the declared forwards would be saved as costs O(N): once per run, not once per forward
    (it was, and 100 forwards took 16 s)."""
    calls = []
    persist_text = I._persisted.persist_text

    def counting(*args, **kwargs):
        calls.append(args)
        return persist_text(*args, **kwargs)
    monkeypatch.setattr(I._persisted, 'persist_text', counting)
    body = '*nat\nCOMMIT\n'                       # intact (its checksum matches) but out of date
    (tmp_path / 'rules.v4').write_text('# Managed by kvmnet.nat\n# kvmnet-nat-restore sha256=%s\n%s' % (
        hashlib.sha256(body.encode()).hexdigest(), body))
    module = fakes.FakeModule(dict(DEFAULTS, forwards=declared(50), persist_path=str(tmp_path / 'rules')), answers(50),
                              check_mode=True, binaries=BINARIES)
    result = fakes.result_of(M.run, module)
    assert len(calls) == 1
    assert len(result['broken']) == 50 and {f['failed'] for f in result['forwards']} == {'saved'}
    assert 'does not hold this forward' in result['forwards'][0]['cause']


def test_an_address_is_found_in_the_rules_when_not_declared(quiet_host):
    forwards = [dict(f) for f in declared(3)]
    del forwards[1]['guest_ip']
    forwards.append({'guest': 'ghost', 'host_port': 9000})
    module = fakes.FakeModule(dict(DEFAULTS, forwards=forwards), answers(3), check_mode=True, binaries=BINARIES)
    result = fakes.result_of(M.run, module)
    by_label = {item['label']: item for item in result['forwards']}
    assert by_label['g1 tcp/10001->80']['guest_ip'] == '192.168.122.11'
    assert by_label['g1 tcp/10001->80']['verdict'] == 'ok'
    ghost = by_label['ghost tcp/9000->9000']
    assert (ghost['verdict'], ghost['failed']) == ('broken', 'guest')
    assert 'No address is known for ghost' in ghost['cause'] and 'virsh not installed' in ghost['cause']


@pytest.mark.parametrize('params, message', [
    ({'timeout': 0}, 'timeout 0 must be between 0.1 and 10'),
    ({'chain_prefix': 'kvm nat'}, "chain_prefix 'kvm nat'"),
    ({'persist_path': 'relative/rules'}, 'must be absolute'),
    ({'port': 70000}, 'port 70000 must be between'),
    ({'forwards': [{'guest': 'web01', 'host_port': 80, 'send': 'x', 'proto': 'tcp'}]}, 'send is for UDP forwards'),
    ({'forwards': [{'guest': 'dns', 'host_port': 53, 'expect': '(', 'proto': 'udp'}]}, 'is not a regular expression'),
    ({'forwards': [{'guest': 'web01', 'guest_ip': '192.168.122.10', 'host_port': 'x'}]}, 'invalid forwards'),
])
def test_bad_parameters_are_refused(quiet_host, params, message):
    args = dict(DEFAULTS, forwards=declared(1))
    args.update(params)
    module = fakes.FakeModule(args, answers(1), check_mode=True, binaries=BINARIES)
    result = fakes.result_of(M.run, module)
    assert result['failed'] and message in result['msg'], result['msg']


def test_the_chain_prefix_is_refused_in_the_engines_words(quiet_host):
    """One text for a bad chain_prefix, whichever module refuses it (it had drifted between forwards and doctor)."""
    module = fakes.FakeModule(dict(DEFAULTS, forwards=declared(1), chain_prefix='kvm nat'), answers(1), check_mode=True,
                              binaries=BINARIES)
    result = fakes.result_of(M.run, module)
    assert result['errors'] == Engine(None, 'kvm nat', 0).problems()
    assert not module.commands()                                   # refused before anything is read


@pytest.mark.parametrize('forward, message', [
    # forwards without guest_ip are looked up, and were echoed into the table unchecked (issue 19)
    ({'guest': 'web\x1b[31m01', 'host_port': 80}, "forwards[1]: guest name 'web\\x1b[31m01' must be"),
    ({'guest': 'web01\nFAKE ok', 'host_port': 80}, "guest name 'web01\\nFAKE ok' must be"),
    ({'guest': 'web01', 'host_port': 80, 'proto': 'tcp;rm'}, "forwards[1]: unknown proto 'tcp;rm'"),
    ({'guest': 'web01', 'host_port': '80\x1b'}, 'forwards[1]: host_port: port'),
    ({'guest': 'web01', 'host_port': 80, 'in_interface': 'eth0;x'}, "in_interface 'eth0;x' is not an interface name"),
    ({'guest': 'web01', 'host_port': 80, 'sources': ['198.51.100.0/24\n']}, 'source'),
])
def test_forwards_without_an_address_are_refused_by_the_engines_rules(quiet_host, forward, message):
    module = fakes.FakeModule(dict(DEFAULTS, forwards=declared(1) + [forward]), answers(1), check_mode=True,
                              binaries=BINARIES)
    result = fakes.result_of(M.run, module)
    assert result['failed'] and message in result['msg'], result['msg']
    assert not [c for c in module.commands() if 'save' in c]       # refused before anything is read
    assert '\x1b' not in result['msg'] and '\n' not in result['msg']


def test_an_unresolved_forward_is_shown_from_its_parsed_values(quiet_host):
    ghost = {'guest': 'ghost', 'host_port': ' 9000 ', 'proto': 'udp'}
    module = fakes.FakeModule(dict(DEFAULTS, forwards=declared(1) + [ghost]), answers(1), check_mode=True, binaries=BINARIES)
    result = fakes.result_of(M.run, module)
    assert [f['label'] for f in result['forwards']][-1] == 'ghost udp/9000->9000'
    assert any(line.startswith('ghost udp/9000->9000 ') for line in result['table'])


def test_a_guest_selection_with_control_characters_is_refused(quiet_host):
    module = fakes.FakeModule(dict(DEFAULTS, forwards=declared(1), guest='x\x1b[2J'), answers(1), check_mode=True,
                              binaries=BINARIES)
    result = fakes.result_of(M.run, module)
    assert result['failed'] and "guest 'x\\x1b[2J' must be" in result['msg']
