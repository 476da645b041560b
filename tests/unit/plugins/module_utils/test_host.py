# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What else manages a hypervisor's firewall, from recorded command output."""

from __future__ import annotations

import pytest

from ansible_collections.kvmnet.nat.plugins.module_utils import _host as H
from ansible_collections.kvmnet.nat.tests.unit.plugins.module_utils.test_netfilter import FakeModule

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
LIBVIRT_NFT = ('table ip libvirt_network {\n\tchain guest_input {\n'
               '\t\toifname "virbr0" ip daddr 192.168.122.0/24 ct state established,related counter accept\n'
               '\t\toifname "virbr0" counter reject\n\t}\n}\n')


def test_parse_dpkg():
    assert H.parse_dpkg(DPKG) == {'ufw': True, 'firewalld': False, 'iptables-persistent': False, 'nftables': True}


def test_parse_apt_simulation_lists_what_would_be_removed():
    assert H.parse_apt_simulation(APT_UFW) == ['ufw']
    assert H.parse_apt_simulation(APT_UFW.replace('Remv ufw [0.36.2-1]\n', '')) == []


@pytest.mark.parametrize('conf, enabled', [('ENABLED=yes\n', True), ('# x\nENABLED=no\n', False),
                                           ('ENABLED="yes"\n', True), ('', False), ('ENABLED = YES', True)])
def test_ufw_enabled(conf, enabled):
    assert H.ufw_enabled(conf) is enabled


def test_nft_rejects():
    assert H.nft_rejects(LIBVIRT_NFT) is True
    assert H.nft_rejects(LIBVIRT_NFT.replace('counter reject', 'counter accept')) is False


def test_read_with_ufw_and_a_simulation_that_would_remove_it():
    module = FakeModule({
        'dpkg-query -W': (1, DPKG, 'dpkg-query: no packages found matching netfilter-persistent'),
        'systemctl is-active firewalld.service': (3, 'inactive\n', ''),
        'nft list table ip libvirt_network': (1, '', 'Error: No such file or directory'),
        'nft list table ip6 libvirt_network': (1, '', 'Error: No such file or directory'),
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
        'nft list table ip libvirt_network': (0, LIBVIRT_NFT, ''),
        'nft list table ip6 libvirt_network': (1, '', 'Error'),
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
