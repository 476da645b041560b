# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The inventory filters, on plain hostvars dicts."""

from __future__ import annotations

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.kvmnet.nat.plugins.filter import exposures as F
from ansible_collections.kvmnet.nat.plugins.filter.exposures import exposure_forwards, guest_exposures

HOSTVARS = {
    'hv1': {'expose_public_ip': '203.0.113.10'},
    'hv2': {},
    'app01': {'expose_hypervisor': 'hv1', 'expose_ports': [{'host': 8443, 'guest': 443}]},
    'app02': {'expose_hypervisor': 'hv1', 'expose_guest_name': 'app02-vm', 'expose_guest_ip': '192.168.122.13',
              'expose_masquerade': 'always', 'expose_ports': [{'host': 9000}]},
    'db01': {'expose_hypervisor': 'hv2', 'expose_ports': [{'host': 5432}]},
    'quoted': {'expose_hypervisor': 'hv1"]||`x`', 'expose_ports': [{'host': 1}]},
}


@pytest.mark.parametrize('hypervisor, expected', [
    ('hv1', [{'name': 'app01', 'ports': [{'host': 8443, 'guest': 443}]},
             {'name': 'app02-vm', 'ip': '192.168.122.13', 'masquerade': 'always', 'ports': [{'host': 9000}]}]),
    ('hv2', [{'name': 'db01', 'ports': [{'host': 5432}]}]),
    ('hv3', []),
    ('hv1"]||`x`', [{'name': 'quoted', 'ports': [{'host': 1}]}]),  # names are data, not query text
])
def test_guest_exposures(hypervisor, expected):
    assert guest_exposures(HOSTVARS, hypervisor) == expected


def test_exposure_forwards():
    exposures = [{'name': 'web01', 'ip': '192.168.122.10', 'ports': [
        {'host': 8080, 'guest': 80},
        {'host': 5353, 'guest': 53, 'proto': 'udp', 'sources': ['198.51.100.0/24']},
    ]}, {'name': 'app02', 'ip': '192.168.122.13', 'masquerade': 'always', 'ports': [{'host': '10000-10009'}]}]
    assert exposure_forwards(exposures) == [
        {'guest': 'web01', 'guest_ip': '192.168.122.10', 'host_port': 8080, 'guest_port': 80, 'proto': 'tcp',
         'sources': [], 'masquerade': 'auto'},
        {'guest': 'web01', 'guest_ip': '192.168.122.10', 'host_port': 5353, 'guest_port': 53, 'proto': 'udp',
         'sources': ['198.51.100.0/24'], 'masquerade': 'auto'},
        {'guest': 'app02', 'guest_ip': '192.168.122.13', 'host_port': '10000-10009', 'guest_port': '10000-10009',
         'proto': 'tcp', 'sources': [], 'masquerade': 'always'},
    ]


@pytest.mark.parametrize('exposures, message', [
    ([{'name': 'web01', 'ports': [{'host': 80}]}], 'guest web01 has no ip'),
    ([{'name': 'web01', 'ip': '192.168.122.10', 'ports': [{'guest': 80}]}], 'guest web01: a port without "host"'),
    ([{'ip': '192.168.122.10'}], 'an exposure without a name'),
])
def test_exposure_forwards_errors(exposures, message):
    with pytest.raises(AnsibleFilterError) as exc:
        exposure_forwards(exposures)
    assert message in str(exc.value)


GUESTS = [
    {'name': 'web01', 'state': 'running', 'ipv4': ['192.168.122.10'],
     'interfaces': [{'mac': '52:54:00:4b:01:10', 'network': 'default'}]},
    {'name': 'db01', 'state': 'shut off', 'ipv4': [], 'interfaces': [{'mac': '52:54:00:00:00:20'}]},
]


def test_resolve_exposures_fills_in_addresses_and_explains_the_rest():
    exposures = [{'name': 'web01', 'ports': [{'host': 8080}]}, {'name': 'db01', 'ports': []},
                 {'name': 'ghost', 'ports': []}, {'name': 'app01', 'ip': '192.168.122.30', 'ports': []}]
    result = F.resolve_exposures(exposures, GUESTS)
    assert result['exposures'] == [
        {'name': 'web01', 'ports': [{'host': 8080}], 'ip': '192.168.122.10', 'mac': '52:54:00:4b:01:10',
         'network': 'default'},
        {'name': 'app01', 'ip': '192.168.122.30', 'ports': []}]
    assert [(u['name'], u['reason'].split(' (')[0]) for u in result['unresolved']] == [
        ('db01', 'the domain is shut off and has no IPv4 address'),
        ('ghost', 'no libvirt domain of that name on this host')]


def test_allow_in_use_travels_to_the_forward():
    forwards = F.exposure_forwards([{'name': 'web01', 'ip': '192.168.122.10',
                                     'ports': [{'host': 80, 'guest': 80, 'allow_in_use': True}]}])
    assert forwards[0]['allow_in_use'] is True
