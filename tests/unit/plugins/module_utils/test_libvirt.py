# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""virsh output parsing for guest_info, on recorded-style output."""

from __future__ import annotations

import pytest

from ansible_collections.kvmnet.nat.plugins.module_utils import _libvirt as L
from ansible_collections.kvmnet.nat.tests.unit.plugins import fakes

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


def FakeModule(answers):  # noqa: N802  (reads like the class it builds)
    """virsh commands are looked up without their "virsh --connect URI" head."""
    return fakes.FakeModule(answers=lambda command: answers[command.split(' ', 3)[3]])


def virsh_calls(module):
    return [command.split(' ', 3)[3] for command in module.commands()]


NETWORK_XML = """<network>
  <name>default</name>
  <uuid>0f0d3c4e-8b53-4a7f-9a57-2d2c8f1a2b10</uuid>
  <forward mode='nat'/>
  <bridge name='virbr0' stp='on' delay='0'/>
  <ip address='192.168.122.1' netmask='255.255.255.0'>
    <dhcp>
      <range start='192.168.122.2' end='192.168.122.254'/>
      <host mac='52:54:00:4B:01:10' name='web01' ip='192.168.122.10'/>
    </dhcp>
  </ip>
  <ip family='ipv6' address='2001:db8:122::1' prefix='64'/>
</network>
"""
HOST_IPS = {L.ipaddress.ip_address(a) for a in ('127.0.0.1', '192.168.122.1', '203.0.113.10', '2001:db8:122::1')}


def test_parse_network_xml():
    net = L.parse_network_xml(NETWORK_XML)
    assert (net['name'], net['bridge'], net['dhcp']) == ('default', 'virbr0', True)
    assert [str(i) for i in net['ips']] == ['192.168.122.1/24', '2001:db8:122::1/64']
    assert net['reservations'] == [{'mac': '52:54:00:4b:01:10', 'name': 'web01', 'ip': '192.168.122.10',
                                    'family': 'ipv4'}]


def test_parse_leases():
    text = (' Expiry Time           MAC address         Protocol   IP address           Hostname   Client ID or DUID\n'
            '-----------------------------------------------------------------------------------------------------\n'
            ' 2026-11-29 11:30:12   52:54:00:4B:01:10   ipv4       192.168.122.10/24    web01      01:52:54\n'
            ' 2026-11-29 11:31:00   52:54:00:aa:bb:cc   ipv4       192.168.122.77/24    -          -\n')
    assert L.parse_leases(text) == [
        {'mac': '52:54:00:4b:01:10', 'address': '192.168.122.10', 'hostname': 'web01'},
        {'mac': '52:54:00:aa:bb:cc', 'address': '192.168.122.77', 'hostname': None}]


@pytest.mark.parametrize('target, address, problem', [
    ('vnet0', '192.168.122.10', None),
    ('vnet0', '2001:db8:122::10', None),
    ('vnet0', '192.168.122.1', 'an address of this host'),             # the bridge: the host itself
    ('vnet0', '203.0.113.10', 'an address of this host'),
    ('vnet0', '127.0.0.1', 'an address of this host'),
    ('vnet0', '10.0.0.5', 'outside network default (192.168.122.0/24, 2001:db8:122::/64)'),
    ('vnet0', '192.168.122.255', 'guest_ip 192.168.122.255 is the broadcast address of 192.168.122.0/24'),
    ('vnet0', '192.168.122.0', 'guest_ip 192.168.122.0 is the network address of 192.168.122.0/24'),
    ('vnet1', '198.51.100.20', 'not on a libvirt network of this host'),  # a host bridge: nothing vouches
])
def test_agent_addresses_are_believed_only_inside_their_network(target, address, problem):
    domain = L.parse_domain_xml(DOMAIN_XML)
    interface = next(i for i in domain['interfaces'] if i['target'] == target)
    networks = {'default': L.parse_network_xml(NETWORK_XML)}
    found = L.agent_address_problem(interface, address, networks, HOST_IPS)
    if problem is None:
        assert found is None, found
    else:
        assert problem in (found or ''), found


AGENT_LIES = """ Name       MAC address          Protocol     Address
-------------------------------------------------------------------------------
 vnet0      52:54:00:aa:00:10    ipv4         192.168.122.1/24
 vnet0      52:54:00:aa:00:10    ipv4         192.168.122.10/24
"""


def test_describe_keeps_only_believable_agent_addresses_and_says_why():
    module = FakeModule({
        'dumpxml web01': (0, DOMAIN_XML, ''), 'domstate web01': (0, 'running\n', ''),
        'domifaddr web01 --full --source lease': (0, '', ''),
        'domifaddr web01 --full --source agent': (0, AGENT_LIES, ''),
        'net-dumpxml default': (0, NETWORK_XML, ''),
    })
    guest, warnings = L.describe(module, 'virsh', 'qemu:///system', 'web01', ['lease', 'agent'], {}, HOST_IPS)
    assert guest['ipv4'] == ['192.168.122.10']
    assert warnings == ['guest web01: ignored 192.168.122.1 reported by the guest agent on vnet0: an address of this host']
    assert [a.get('rejected') for a in guest['interfaces'][0]['addresses']] == ['an address of this host', None]


def test_describe_prefers_the_lease_and_never_asks_the_agent_then():
    module = FakeModule({
        'dumpxml web01': (0, DOMAIN_XML, ''), 'domstate web01': (0, 'running\n', ''),
        'domifaddr web01 --full --source lease': (0, DOMIFADDR_FULL, ''),
    })
    guest, warnings = L.describe(module, 'virsh', 'qemu:///system', 'web01', ['lease', 'agent'], {}, HOST_IPS)
    assert (guest['ipv4'], warnings) == (['192.168.122.10'], [])
    assert [a['source'] for a in guest['interfaces'][0]['addresses']] == ['lease', 'lease']
    assert len(module.calls) == 3


def test_describe_falls_back_to_the_agent_and_never_writes():
    module = FakeModule({
        'dumpxml web01': (0, DOMAIN_XML, ''),
        'domstate web01': (0, 'running\n\n', ''),
        'domifaddr web01 --full --source lease': (0, '', ''),
        'domifaddr web01 --full --source agent': (0, DOMIFADDR_FULL, ''),
        'net-dumpxml default': (0, NETWORK_XML, ''),
    })
    guest, warnings = L.describe(module, 'virsh', 'qemu:///system', 'web01', ['lease', 'agent'], {}, HOST_IPS)
    assert (guest['state'], guest['ipv4'], warnings) == ('running', ['192.168.122.10'], [])
    assert [c.split()[0] for c in virsh_calls(module)] == ['dumpxml', 'domstate', 'domifaddr', 'domifaddr', 'net-dumpxml']


def test_describe_reports_a_failing_source_as_a_warning():
    module = FakeModule({
        'dumpxml web01': (0, DOMAIN_XML, ''),
        'domstate web01': (0, 'running\n', ''),
        'domifaddr web01 --full --source agent': (1, '', 'error: Guest agent is not responding'),
    })
    guest, warnings = L.describe(module, 'virsh', 'qemu:///system', 'web01', ['agent'], {}, HOST_IPS)
    assert guest['ipv4'] == []
    assert warnings == ['guest web01: no addresses from source agent: virsh --connect qemu:///system domifaddr '
                        'web01 --full --source agent failed (rc=1): error: Guest agent is not responding']


def test_shut_off_guest_has_no_addresses_and_is_not_queried():
    module = FakeModule({'dumpxml web01': (0, DOMAIN_XML, ''), 'domstate web01': (0, 'shut off\n', '')})
    guest, _warnings = L.describe(module, 'virsh', 'qemu:///system', 'web01', ['lease'], {}, HOST_IPS)
    assert (guest['state'], guest['ipv4']) == ('shut off', [])
    assert len(module.calls) == 2


# -------------------------------------------------------------- who answers for an address on the bridge

@pytest.mark.parametrize('text, expected', [
    ('[{"dst":"192.168.122.20","lladdr":"52:54:00:EE:00:09","state":["REACHABLE"]}]',
     {'mac': '52:54:00:ee:00:09', 'state': 'REACHABLE', 'problem': None}),
    ('[{"dst":"192.168.122.20","lladdr":"52:54:00:ee:00:09","state":["STALE"]}]',
     {'mac': '52:54:00:ee:00:09', 'state': 'STALE', 'problem': None}),
    ('[{"dst":"192.168.122.20","state":["FAILED"]}]',
     {'mac': None, 'state': 'FAILED', 'problem': 'its neighbour entry is FAILED, nothing answered'}),
    ('[{"dst":"192.168.122.20","state":["INCOMPLETE"]}]',
     {'mac': None, 'state': 'INCOMPLETE', 'problem': 'its neighbour entry is INCOMPLETE, nothing answered'}),
    ('[{"dst":"192.168.122.21","lladdr":"52:54:00:4b:01:10","state":["REACHABLE"]}]',
     {'mac': None, 'state': None, 'problem': 'no neighbour entry for it'}),
    ('[]', {'mac': None, 'state': None, 'problem': 'no neighbour entry for it'}),
    ('', {'mac': None, 'state': None, 'problem': 'no neighbour entry for it'}),
])
def test_parse_neighbour(text, expected):
    assert L.parse_neighbour(text, '192.168.122.20') == expected


NEIGH = '[{"dst":"192.168.122.20","lladdr":"52:54:00:ee:00:09","state":["REACHABLE"]}]'


@pytest.mark.parametrize('binaries, answers, commands, expected', [
    # ping makes the host ask (its failure does not matter), then the table is read
    (None, [('ping', (1, '', '')), ('ip', (0, NEIGH, ''))],
     ['ping -n -q -c 1 -W 1 -I virbr0 192.168.122.20', 'ip -j neigh show dev virbr0 to 192.168.122.20'],
     {'mac': '52:54:00:ee:00:09', 'state': 'REACHABLE', 'problem': None}),
    # without ping the table is read as it is, and an empty answer says ping was missing
    (['ip'], [('ip', (0, '[]', ''))], ['ip -j neigh show dev virbr0 to 192.168.122.20'],
     {'mac': None, 'state': None, 'problem': 'no neighbour entry for it; ping (iputils) is missing, so the host could '
                                             'not ask who has it'}),
    # without ip nothing can be read
    (['ping'], [], [],
     {'mac': None, 'state': None, 'problem': 'the ip command (iproute2) is missing, needed to read the neighbour table'}),
    # ip fails
    (None, [('ping', (0, '', '')), ('ip', (1, '', 'Cannot find device "virbr0"'))],
     ['ping -n -q -c 1 -W 1 -I virbr0 192.168.122.20', 'ip -j neigh show dev virbr0 to 192.168.122.20'],
     {'mac': None, 'state': None, 'problem': 'ip -j neigh show dev virbr0 to 192.168.122.20 failed (rc=1): '
                                             'Cannot find device "virbr0"'}),
])
def test_read_neighbour_asks_once_then_reads_the_table(binaries, answers, commands, expected):
    module = fakes.FakeModule(answers=list(answers), binaries=binaries)
    assert L.read_neighbour(module, 'virbr0', '192.168.122.20') == expected
    assert module.commands() == commands
