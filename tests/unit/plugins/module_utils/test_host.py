# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The host reader (_host), table-driven from recorded command output: what else manages a hypervisor's
firewall, sysctls, default routes, the nftables ruleset (JSON), the iptables flavour (decided as the
engine decides) and libvirt."""

from __future__ import annotations

import json
import re

import pytest

from ansible_collections.kvmnet.nat.plugins.module_utils import _backend as B
from ansible_collections.kvmnet.nat.plugins.module_utils import _host as H
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables import diagnose as I
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables import netfilter as N
from ansible_collections.kvmnet.nat.tests.unit.plugins import fakes


def FakeModule(answers, binaries=None):  # noqa: N802  (reads like the class it builds)
    return fakes.FakeModule(answers=answers, binaries=binaries)


DPKG = ('ufw\tinstall ok installed\nfirewalld\tdeinstall ok config-files\n'
        'iptables-persistent\tunknown ok not-installed\nnftables\tinstall ok installed\n')
# apt-get -s install iptables-persistent on Debian 12 with ufw installed (recorded)
APT_UFW = """NOTE: This is only a simulation!
      apt-get needs root privileges for real execution.
Reading package lists...
Building dependency tree...
The following packages will be REMOVED:
  ufw
The following NEW packages will be installed:
  iptables-persistent netfilter-persistent
0 upgraded, 2 newly installed, 1 to remove and 0 not upgraded.
Remv ufw [0.36.2-1]
Inst netfilter-persistent (1.0.20 Debian:12.8/stable [all])
Inst iptables-persistent (1.0.20 Debian:12.8/stable [all])
Conf netfilter-persistent (1.0.20 Debian:12.8/stable [all])
Conf iptables-persistent (1.0.20 Debian:12.8/stable [all])
"""
# nft -j list ruleset of libvirt 11's nftables backend (abridged: the table, its chains, two rules of guest_input)
LIBVIRT_NFT = json.dumps({'nftables': [
    {'metainfo': {'version': '1.0.9', 'json_schema_version': 1}},
    {'table': {'family': 'ip', 'name': 'libvirt_network', 'handle': 1}},
    {'chain': {'family': 'ip', 'table': 'libvirt_network', 'name': 'forward', 'handle': 1, 'type': 'filter',
               'hook': 'forward', 'prio': 0, 'policy': 'accept'}},
    {'chain': {'family': 'ip', 'table': 'libvirt_network', 'name': 'guest_input', 'handle': 3}},
    {'rule': {'family': 'ip', 'table': 'libvirt_network', 'chain': 'forward', 'handle': 5,
              'expr': [{'jump': {'target': 'guest_input'}}]}},
    {'rule': {'family': 'ip', 'table': 'libvirt_network', 'chain': 'guest_input', 'handle': 8, 'expr': [
        {'match': {'op': '==', 'left': {'meta': {'key': 'oifname'}}, 'right': 'virbr0'}},
        {'match': {'op': 'in', 'left': {'ct': {'key': 'state'}}, 'right': ['established', 'related']}},
        {'counter': {'packets': 0, 'bytes': 0}}, {'accept': None}]}},
    {'rule': {'family': 'ip', 'table': 'libvirt_network', 'chain': 'guest_input', 'handle': 9, 'expr': [
        {'match': {'op': '==', 'left': {'meta': {'key': 'oifname'}}, 'right': 'virbr0'}},
        {'counter': {'packets': 0, 'bytes': 0}}, {'reject': {'type': 'icmp', 'expr': 'port-unreachable'}}]}},
]})
NO_NFT = '{"nftables": [{"metainfo": {"version": "1.0.6"}}]}'


def test_parse_dpkg():
    assert H.parse_dpkg(DPKG) == {'ufw': True, 'firewalld': False, 'iptables-persistent': False, 'nftables': True}


def test_parse_apt_simulation_lists_what_would_be_removed():
    assert H.parse_apt_simulation(APT_UFW) == ['ufw']
    assert H.parse_apt_simulation(APT_UFW.replace('Remv ufw [0.36.2-1]\n', '')) == []


@pytest.mark.parametrize('conf, enabled', [('ENABLED=yes\n', True), ('# x\nENABLED=no\n', False),
                                           ('ENABLED="yes"\n', True), ('', False), ('ENABLED = YES', True)])
def test_ufw_enabled(conf, enabled):
    assert H.ufw_enabled(conf) is enabled


@pytest.mark.parametrize('ruleset, family, rejects', [
    (LIBVIRT_NFT, 'ip', True),
    (LIBVIRT_NFT, 'ip6', False),                                     # no ip6 table
    (LIBVIRT_NFT.replace('"reject"', '"drop"'), 'ip', False),        # only a reject counts, as before
    (LIBVIRT_NFT.replace('libvirt_network', 'other'), 'ip', False),  # only libvirt's table
    (NO_NFT, 'ip', False),
    ('[]', 'ip', False),
])
def test_libvirt_rejects(ruleset, family, rejects):
    assert H.libvirt_rejects(json.loads(ruleset), family) is rejects


def test_nft_tables_of_libvirts_table_follows_its_jump_to_the_reject():
    tables = H.nft_tables(json.loads(LIBVIRT_NFT))
    assert [(t['family'], t['name'], t['iptables']) for t in tables] == [('ip', 'libvirt_network', False)]
    [forward] = tables[0]['base']
    assert (forward['name'], forward['hook']) == ('forward', 'forward')
    assert forward['stops'] == [('reject', {'text': '"oifname "virbr0" reject" (chain guest_input)',
                                            'ifaces': (('oifname', 'virbr0', False),)})]


@pytest.mark.parametrize('answer, readable, error', [
    ((0, LIBVIRT_NFT, ''), True, ''),
    ((1, '', 'Operation not permitted'), False, 'nft -j list ruleset failed: Operation not permitted'),
    ((0, 'table ip x {}', ''), False, 'nft printed no JSON: '),
])
def test_nft_ruleset(answer, readable, error):
    ruleset, why = H.nft_ruleset(FakeModule({'nft -j list ruleset': answer}))
    assert (ruleset is not None, why[:len(error)] if error else why) == (readable, error)


def test_nft_ruleset_without_nft():
    assert H.nft_ruleset(FakeModule({}, binaries=set())) == (None, 'nft not installed')


def test_read_with_ufw_and_a_simulation_that_would_remove_it():
    module = FakeModule({
        'dpkg-query -W': (1, DPKG, 'dpkg-query: no packages found matching netfilter-persistent'),
        'systemctl is-active firewalld.service': (3, 'inactive\n', ''),
        'nft -j list ruleset': (0, NO_NFT, ''),
        'apt-get -s -q -o Debug::NoLocking=true install --no-install-recommends iptables-persistent': (0, APT_UFW, ''),
        'ip -j -4 route show default': (0, '[{"dst":"default","gateway":"203.0.113.1","dev":"eth0"}]', ''),
        'ip -j addr show': (0, '[{"ifname":"eth0","addr_info":[{"local":"203.0.113.10","prefixlen":24}]}]', ''),
    }, binaries={'dpkg-query', 'systemctl', 'nft', 'apt-get', 'ip'})
    facts = H.read(module, ['iptables-persistent'], {'unit': '/nonexistent/kvmnet-nat.service'})
    assert facts['firewalld'] == {'installed': False, 'active': False}
    assert facts['ufw']['installed'] is True
    assert facts['netfilter_persistent'] == {'installed': False}
    assert facts['libvirt_nftables'] == {'ipv4': False, 'ipv6': False}
    assert facts['install'] == {'packages': ['iptables-persistent'], 'would_remove': ['ufw'], 'error': ''}
    assert facts['files'] == {'unit': {'exists': False, 'sha256': None}}
    assert facts['default_ipv4'] == '203.0.113.10'


def test_read_sees_firewalld_active_and_libvirts_nftables_reject():
    module = FakeModule({
        'dpkg-query -W': (0, 'firewalld\tinstall ok installed\n', ''),
        'systemctl is-active firewalld.service': (0, 'active\n', ''),
        'nft -j list ruleset': (0, LIBVIRT_NFT, ''),
    }, binaries={'dpkg-query', 'systemctl', 'nft'})
    facts = H.read(module)
    assert facts['firewalld'] == {'installed': True, 'active': True}
    assert facts['libvirt_nftables'] == {'ipv4': True, 'ipv6': False}
    assert facts['install'] == {'packages': [], 'would_remove': [], 'error': ''}


@pytest.mark.parametrize('routes, expected', [
    ('[{"dst":"default","gateway":"203.0.113.1","dev":"eth0","prefsrc":"203.0.113.99"}]', '203.0.113.99'),
    ('[{"dst":"default","gateway":"203.0.113.1","dev":"eth0"}]', '203.0.113.10'),
    ('[{"dst":"default","gateway":"10.0.0.1","dev":"eth9"}]', ''),
    ('[]', ''),
    ('not json', ''),
])
def test_default_ipv4(routes, expected):
    interfaces = [(H._routes.ipaddress.ip_interface('203.0.113.10/24'), 'eth0'),
                  (H._routes.ipaddress.ip_interface('2001:db8::10/64'), 'eth0')]
    assert H.default_ipv4(routes, interfaces) == expected


def test_file_state(tmp_path):
    path = tmp_path / 'f'
    path.write_text('x')
    assert H.file_state(str(path)) == {'exists': True, 'sha256': H.hashlib.sha256(b'x').hexdigest()}
    assert H.file_state(str(tmp_path)) == {'exists': True, 'sha256': None}
    assert H.file_state(str(tmp_path / 'missing')) == {'exists': False, 'sha256': None}


def test_sysctls(tmp_path):
    for path, value in (('net/ipv4/ip_forward', '1\n'), ('net/ipv6/conf/all/forwarding', '0\n'),
                        ('net/ipv4/conf/all/rp_filter', '0\n'), ('net/ipv4/conf/eth0/rp_filter', '1\n'),
                        ('net/ipv4/conf/virbr0/rp_filter', 'x\n'), ('net/ipv4/conf/eth0/forwarding', '0\n'),
                        ('net/ipv4/conf/virbr0/forwarding', '1\n')):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(value)
    assert H.sysctls(str(tmp_path)) == {'ipv4_forward': '1', 'ipv6_forward': '0', 'rp_filter': {'all': 0, 'eth0': 1},
                                        'forwarding4': {'eth0': '0', 'virbr0': '1'}, 'forwarding6': {'all': '0'},
                                        'bridge_nf': None}
    assert H.forwarding(str(tmp_path / 'missing')) == {'ipv4': None, 'ipv6': None}


ADDR = ('[{"ifname":"virbr0","addr_info":[{"local":"192.168.122.1","prefixlen":24}]},'
        '{"ifname":"eth0","addr_info":[{"local":"203.0.113.10","prefixlen":24},{"local":"2001:db8::10","prefixlen":64}]}]')


@pytest.mark.parametrize('answers, devices, address', [
    ({'ip -j -4 route show default': (0, '[{"dst":"default","gateway":"203.0.113.1","dev":"eth0"}]', ''),
      'ip -j -6 route show default': (0, '[{"dst":"default","gateway":"2001:db8::1","dev":"eth1"}]', '')},
     {4: 'eth0', 6: 'eth1'}, '203.0.113.10'),
    ({'ip -j -4 route show default': (0, '[]', ''), 'ip -j -6 route show default': (0, '', '')}, {}, ''),
    ({'ip -j -4 route show default': (2, '', 'RTNETLINK answers: Operation not supported'),
      'ip -j -6 route show default': (0, 'garbage', '')}, {}, ''),
])
def test_defaults(answers, devices, address):
    module = FakeModule(dict(answers, **{'ip -j addr show': (0, ADDR, '')}))
    assert H.defaults(module) == (devices, address)


# ---------------------------------------------------------------- the iptables flavour, as the engine decides it

EMPTY = '*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n'
RULES = '*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n[3:180] -A FORWARD -j LIBVIRT_FWX\nCOMMIT\n'
OURS = ('*nat\n:PREROUTING ACCEPT [0:0]\n:KVMNAT_DNAT - [0:0]\n[1:60] -A PREROUTING -j KVMNAT_DNAT\nCOMMIT\n')
ALL_TOOLS = {'iptables-legacy-save', 'iptables-legacy-restore', 'iptables-nft-save', 'iptables-nft-restore',
             'iptables-save', 'iptables-restore'}
NFT_DEFAULT = 'iptables-save v1.8.9 (nf_tables)'
LEGACY_DEFAULT = 'iptables-save v1.8.9 (legacy)'

# (legacy save, nft save, plain iptables-save --version, the kernel's legacy tables, binaries, flavour)
HOSTS = [
    (EMPTY, EMPTY, NFT_DEFAULT, None, ALL_TOOLS, 'nft'),              # nothing in use: the host's default
    (EMPTY, EMPTY, LEGACY_DEFAULT, None, ALL_TOOLS, 'legacy'),
    (None, EMPTY, LEGACY_DEFAULT, [], ALL_TOOLS, 'legacy'),           # legacy holds no table, yet is the default
    (RULES, EMPTY, NFT_DEFAULT, ['filter'], ALL_TOOLS, 'legacy'),     # rules decide, not the default
    (EMPTY, OURS, LEGACY_DEFAULT, None, ALL_TOOLS, 'nft'),
    (RULES, OURS, NFT_DEFAULT, None, ALL_TOOLS, None),                # both: the engine refuses
    (None, None, LEGACY_DEFAULT, None, {'iptables-save', 'iptables-restore'}, 'legacy'),
    (None, None, None, None, set(), None),                            # no tool at all
]


def _answers(legacy, nft, default):
    """The commands of a host: each save with -c (the doctor) and without (the engine), as iptables prints them."""
    answers = {'iptables-save --version': (0, default or '', '')}
    for name, text in (('legacy', legacy), ('nft', nft)):
        answers['iptables-%s-save -c' % name] = (0, text, '') if text is not None else (1, '', 'no kernel support')
        answers['iptables-%s-save' % name] = (0, re.sub(r'(?m)^\[\d+:\d+\] ', '', text), '') if text is not None \
            else (1, '', 'no kernel support')
    answers['iptables-save'] = (0, EMPTY, '')
    return answers


@pytest.mark.parametrize('legacy, nft, default, kernel, binaries, flavour', HOSTS)
def test_the_doctor_reads_the_flavour_the_engine_uses(legacy, nft, default, kernel, binaries, flavour):
    saves = H.iptables_saves(FakeModule(_answers(legacy, nft, default), binaries), 4, legacy=lambda family: kernel)
    assert saves.flavour == flavour
    try:
        tools = N.detect(FakeModule(_answers(legacy, nft, default), binaries), 4, legacy=lambda family: kernel)
    except B.RulesetError:
        tools = None
        assert saves.both
    assert (tools.flavour if tools else None) == flavour


def test_the_saves_are_read_once_with_counters():
    module = FakeModule(_answers(RULES, EMPTY, NFT_DEFAULT), ALL_TOOLS)
    saves = H.iptables_saves(module, 4, legacy=lambda family: ['filter'])
    assert module.commands() == ['iptables-legacy-save -c', 'iptables-nft-save -c']    # rules in use: no --version
    assert saves.commands == {'legacy': ['/usr/sbin/iptables-legacy-save'], 'nft': ['/usr/sbin/iptables-nft-save']}


@pytest.mark.parametrize('legacy, nft, walked', [(RULES, OURS, 'nft'), (OURS, RULES, 'legacy'), (RULES, RULES, 'nft')])
def test_a_host_with_rules_in_both_flavours_is_mixed_and_walked_where_our_chains_are(legacy, nft, walked):
    saves = H.iptables_saves(FakeModule(_answers(legacy, nft, NFT_DEFAULT), ALL_TOOLS), 4, legacy=lambda family: None)
    fam = I.family_of(saves, 'KVMNAT')
    assert (saves.flavour, saves.both, fam['flavour']) == (None, True, walked)
    assert 'both iptables-legacy and iptables-nft' in fam['mixed']
    assert fam['save_cmd'] == ['/usr/sbin/iptables-%s-save' % walked]


def test_a_family_without_tools_has_no_flavour():
    fam = I.family_of(H.iptables_saves(FakeModule({}, set()), 6), 'KVMNAT')
    assert (fam['flavour'], fam['tables'], fam['mixed']) == (None, {}, '')
