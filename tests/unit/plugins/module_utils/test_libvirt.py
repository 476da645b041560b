# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""virsh output parsing for guest_info, on recorded-style output."""

from __future__ import annotations

import pytest

from ansible_collections.kvmnet.nat.plugins.module_utils import _libvirt as L

DOMAIN_XML = """<domain type='qemu' id='3'>
  <name>web01</name>
  <uuid>6f0d3c4e-8b53-4a7f-9a57-2d2c8f1a2b10</uuid>
  <devices>
    <disk type='file' device='disk'><target dev='vda' bus='virtio'/></disk>
    <interface type='network'>
      <mac address='52:54:00:AA:00:10'/>
      <source network='default' portid='0b8d' bridge='virbr0'/>
      <target dev='vnet0'/>
      <model type='virtio'/>
    </interface>
    <interface type='bridge'>
      <mac address='52:54:00:bb:00:10'/>
      <source bridge='br-public'/>
      <target dev='vnet1'/>
    </interface>
  </devices>
</domain>
"""

DOMIFADDR_SHORT = """ Name       MAC address          Protocol     Address
-------------------------------------------------------------------------------
 vnet0      52:54:00:aa:00:10    ipv4         192.168.122.10/24
 -          -                    ipv6         2001:db8:122::10/64
 -          -                    ipv6         fe80::5054:ff:feaa:10/64
 vnet1      52:54:00:bb:00:10    ipv4         198.51.100.20/24

"""

DOMIFADDR_FULL = """ Name       MAC address          Protocol     Address
-------------------------------------------------------------------------------
 vnet0      52:54:00:aa:00:10    ipv4         192.168.122.10/24
 vnet0      52:54:00:aa:00:10    ipv6         2001:db8:122::10/64
"""


def test_parse_domain_xml():
    domain = L.parse_domain_xml(DOMAIN_XML)
    assert domain['name'] == 'web01'
    assert domain['uuid'] == '6f0d3c4e-8b53-4a7f-9a57-2d2c8f1a2b10'
    assert domain['interfaces'] == [
        {'type': 'network', 'mac': '52:54:00:aa:00:10', 'network': 'default', 'bridge': 'virbr0',
         'target': 'vnet0', 'model': 'virtio'},
        {'type': 'bridge', 'mac': '52:54:00:bb:00:10', 'network': None, 'bridge': 'br-public',
         'target': 'vnet1', 'model': None},
    ]


@pytest.mark.parametrize('text, expected', [
    (DOMIFADDR_SHORT, [
        ('vnet0', '52:54:00:aa:00:10', 'ipv4', '192.168.122.10', 24),
        ('vnet0', '52:54:00:aa:00:10', 'ipv6', '2001:db8:122::10', 64),
        ('vnet0', '52:54:00:aa:00:10', 'ipv6', 'fe80::5054:ff:feaa:10', 64),
        ('vnet1', '52:54:00:bb:00:10', 'ipv4', '198.51.100.20', 24),
    ]),
    (DOMIFADDR_FULL, [
        ('vnet0', '52:54:00:aa:00:10', 'ipv4', '192.168.122.10', 24),
        ('vnet0', '52:54:00:aa:00:10', 'ipv6', '2001:db8:122::10', 64),
    ]),
    ('', []),
])
def test_parse_domifaddr(text, expected):
    rows = L.parse_domifaddr(text)
    assert [(r['target'], r['mac'], r['family'], r['address'], r['prefix']) for r in rows] == expected


def test_merge_skips_link_local_and_matches_by_mac():
    guest = L.merge(L.parse_domain_xml(DOMAIN_XML), 'running', L.parse_domifaddr(DOMIFADDR_SHORT))
    assert guest['ipv4'] == ['192.168.122.10', '198.51.100.20']
    assert guest['ipv6'] == ['2001:db8:122::10']
    assert [a['address'] for a in guest['interfaces'][1]['addresses']] == ['198.51.100.20']


class FakeModule:
    def __init__(self, answers):
        self.answers = answers
        self.calls = []

    def run_command(self, cmd, environ_update=None):
        assert isinstance(cmd, list) and environ_update == L.ENVIRON
        self.calls.append(cmd[3:])
        return self.answers[' '.join(cmd[3:])]


def test_describe_falls_back_to_the_agent_and_never_writes():
    module = FakeModule({
        'dumpxml web01': (0, DOMAIN_XML, ''),
        'domstate web01': (0, 'running\n\n', ''),
        'domifaddr web01 --full --source lease': (0, '', ''),
        'domifaddr web01 --full --source agent': (0, DOMIFADDR_FULL, ''),
    })
    guest, warnings = L.describe(module, 'virsh', 'qemu:///system', 'web01', ['lease', 'agent'])
    assert (guest['state'], guest['ipv4'], warnings) == ('running', ['192.168.122.10'], [])
    assert [c[0] for c in module.calls] == ['dumpxml', 'domstate', 'domifaddr', 'domifaddr']


def test_describe_reports_a_failing_source_as_a_warning():
    module = FakeModule({
        'dumpxml web01': (0, DOMAIN_XML, ''),
        'domstate web01': (0, 'running\n', ''),
        'domifaddr web01 --full --source agent': (1, '', 'error: Guest agent is not responding'),
    })
    guest, warnings = L.describe(module, 'virsh', 'qemu:///system', 'web01', ['agent'])
    assert guest['ipv4'] == []
    assert warnings == ['guest web01: no addresses from source agent: virsh --connect qemu:///system domifaddr '
                        'web01 --full --source agent failed (rc=1): error: Guest agent is not responding']


def test_shut_off_guest_has_no_addresses_and_is_not_queried():
    module = FakeModule({'dumpxml web01': (0, DOMAIN_XML, ''), 'domstate web01': (0, 'shut off\n', '')})
    guest, _warnings = L.describe(module, 'virsh', 'qemu:///system', 'web01', ['lease'])
    assert (guest['state'], guest['ipv4']) == ('shut off', [])
    assert len(module.calls) == 2
