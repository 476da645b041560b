# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""kvmnet.nat.forwards refuses a public address that is not the host's own, unless it is a listed VIP (issue 19)."""

from __future__ import annotations

import pytest

from ansible_collections.kvmnet.nat.plugins.module_utils import _forward as F
from ansible_collections.kvmnet.nat.plugins.modules import forwards as M
from ansible_collections.kvmnet.nat.tests.unit.plugins import fakes

ADDR = ('[{"ifname":"virbr0","addr_info":[{"local":"192.168.122.1","prefixlen":24}]},'
        '{"ifname":"eth0","addr_info":[{"local":"203.0.113.10","prefixlen":24}]}]')
ANSWERS = {'ip -j addr show': (0, ADDR, ''),
           'ip -j -4 route get 192.168.122.': (0, '[{"dst":"192.168.122.10","dev":"virbr0"}]', '')}


def check_host(public_ip=None, vips=None, forwards=None):
    """``_check_host`` of the module (what it says about the host's addresses), with a canned ``ip``."""
    params = {'public_ip': '203.0.113.10', 'public_ip6': None, 'in_interface': None, 'check_listeners': False,
              'vip_addresses': vips if vips is not None else []}
    raws = forwards or [{'guest': 'web01', 'guest_ip': '192.168.122.10', 'host_port': 8081, 'guest_port': 80,
                         'public_ip': public_ip}]
    module = fakes.FakeModule(params, ANSWERS)
    parsed = F.parse_forwards(raws, params['public_ip'])
    try:
        return [str(fwd.public_ip) for fwd in M._check_host(module, parsed)], module.warnings
    except fakes.Exit as exc:
        return exc.result['errors'], module.warnings


def foreign(address, labels):
    return ('public_ip %s is not an address of this host (forwards %s): they would take traffic routed through this '
            "host to %s, someone else's service; give an address of this host, or list %s in vip_addresses (role: "
            'expose_vip_addresses) if it is a failover address that moves between hosts'
            % (address, labels, address, address))


@pytest.mark.parametrize('public_ip, vips, expected', [
    # the issue: a guest host's public_ip that the hypervisor routes to but does not own was only warned
    ('203.0.113.99', None, [foreign('203.0.113.99', 'web01 tcp/8081->80')]),
    ('198.51.100.7', ['203.0.113.99'], [foreign('198.51.100.7', 'web01 tcp/8081->80')]),
    ('203.0.113.99', ['203.0.113.99'], ['203.0.113.99']),                  # a listed VIP
    ('203.0.113.99', ['198.51.100.7', '203.0.113.99'], ['203.0.113.99']),
    (None, None, ['203.0.113.10']),                                          # the host's own address
    ('203.0.113.10', ['203.0.113.99'], ['203.0.113.10']),
    ('203.0.113.99', ['127.0.0.1', 'x'], ['vip_addresses 127.0.0.1 is a loopback address',
                                          "vip_addresses 'x' is not an IP address",
                                          foreign('203.0.113.99', 'web01 tcp/8081->80')]),
])
def test_a_public_address_not_of_this_host_is_refused_unless_a_listed_vip(public_ip, vips, expected):
    assert check_host(public_ip, vips) == (expected, [])


def test_one_error_per_foreign_address_naming_every_forward():
    forwards = [{'guest': 'web01', 'guest_ip': '192.168.122.10', 'host_port': port, 'public_ip': '203.0.113.99'}
                for port in (8081, 8082)]
    forwards.append({'guest': 'web02', 'guest_ip': '192.168.122.11', 'host_port': 9000, 'public_ip': '198.51.100.7'})
    errors, _warnings = check_host(forwards=forwards, vips=[])
    assert errors == [foreign('198.51.100.7', 'web02 tcp/9000->9000'),
                      foreign('203.0.113.99', 'web01 tcp/8081->8081, web01 tcp/8082->8082')]


@pytest.mark.parametrize('values, expected', [
    (None, (set(), [])),
    ([], (set(), [])),
    (['203.0.113.99', '2001:db8::99'], ({F.parse_address('203.0.113.99', 'x'), F.parse_address('2001:db8::99', 'x')}, [])),
    (['224.0.0.1'], (set(), ['vip_addresses 224.0.0.1 is a multicast address'])),
    (['203.0.113.99%eth0'], (set(), ["vip_addresses '203.0.113.99%eth0' has a zone id (\"%...\"); kvmnet.nat takes no "
                                     "scoped addresses"])),
    ('203.0.113.99', (set(), ["vip_addresses must be a list of addresses, not '203.0.113.99'"])),
])
def test_parse_vip_addresses(values, expected):
    assert F.parse_vip_addresses(values) == expected


def test_the_option_is_in_the_argument_spec_as_documented():
    assert M.argument_spec()['vip_addresses'] == {'type': 'list', 'elements': 'str', 'default': []}
