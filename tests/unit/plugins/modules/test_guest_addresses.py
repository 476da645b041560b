# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""kvmnet.nat.guest_addresses with canned virsh answers: the commands it runs, the pins it records."""

from __future__ import annotations

import json
import os

import pytest

from ansible_collections.kvmnet.nat.plugins.modules import guest_addresses as M
from ansible_collections.kvmnet.nat.tests.unit.plugins import fakes

WEB = '52:54:00:4b:01:10'
APP = '52:54:00:aa:00:01'
NETWORK = """<network><name>default</name><bridge name='virbr0'/>
  <ip address='192.168.122.1' netmask='255.255.255.0'><dhcp>
    <range start='192.168.122.2' end='192.168.122.254'/>
    <host mac='%s' name='web01' ip='192.168.122.10'/>%s
  </dhcp></ip></network>"""
LEASES = (' Expiry Time           MAC address         Protocol   IP address           Hostname   Client ID or DUID\n'
          '-----------------------------------------------------------------------------------------------------\n'
          ' 2026-11-29 11:30:12   %s   ipv4       192.168.122.10/24    web01      -\n'
          ' 2026-11-29 11:31:00   %s   ipv4       192.168.122.77/24    app01      -\n' % (WEB, APP))


def domain(name, mac):
    return ("<domain><name>%s</name><devices><interface type='network'><mac address='%s'/>"
            "<source network='default'/><target dev='vnet0'/></interface></devices></domain>" % (name, mac))


DOMIFADDR = (' Name       MAC address          Protocol     Address\n---------------------------------\n'
             ' vnet0      %s    ipv4         192.168.122.77/24\n' % APP)


DEFAULTS = {'names': [], 'declared': {}, 'pin': True, 'state': 'present', 'record_path': None,
            'uri': 'qemu:///system', 'address_sources': ['lease']}


def FakeModule(params, answers, check_mode=False):  # noqa: N802  (reads like the class it builds)
    """virsh commands are looked up without their "virsh --connect URI" head."""
    def answer(command):
        args = command.split(' ', 3)[3]
        return next(value for prefix, value in answers.items() if args.startswith(prefix))
    return fakes.FakeModule(dict(DEFAULTS, **params), answer, check_mode)


def net_updates(module):
    return [c.split(' ', 3)[3] for c in module.commands() if c.split(' ', 3)[3].startswith('net-update')]


def answers(extra_reservation=''):
    return {
        'net-list --name': (0, 'default\n', ''), 'net-list --all --name': (0, 'default\n', ''),
        'net-dumpxml default': (0, NETWORK % (WEB, extra_reservation), ''),
        'net-dhcp-leases default': (0, LEASES, ''),
        'list --all --name': (0, 'web01\napp01\n', ''),
        'dumpxml web01': (0, domain('web01', WEB), ''), 'dumpxml app01': (0, domain('app01', APP), ''),
        'domstate app01': (0, 'running\n', ''),
        'domifaddr app01 --full --source lease': (0, DOMIFADDR, ''),
        'net-update': (0, 'Updated network default live state\n', ''),
    }


def run(module):
    return fakes.result_of(M.run, module)


@pytest.fixture
def record(tmp_path):
    return str(tmp_path / 'lib' / 'pins.json')


APP_XML = '<host mac="%s" ip="192.168.122.77" />' % APP


def test_a_looked_up_guest_is_pinned_live_and_persistent_and_recorded(record):
    module = FakeModule({'names': ['web01', 'app01'], 'declared': {'web01': '192.168.122.10'}, 'record_path': record},
                        answers())
    result = run(module)
    assert result['changed'] is True
    assert net_updates(module) == [
        'net-update default add-last ip-dhcp-host %s --live --config' % APP_XML]
    assert result['guests'] == [
        {'name': 'web01', 'ip': '192.168.122.10', 'source': 'declared', 'mac': WEB, 'network': 'default',
         'pinned': True},           # the lab's own reservation: right already, not taken over
        {'name': 'app01', 'ip': '192.168.122.77', 'source': 'lease', 'mac': APP, 'network': 'default', 'pinned': True}]
    with open(record) as handle:
        assert json.load(handle)['pins'] == [{'network': 'default', 'mac': APP, 'ip': '192.168.122.77',
                                              'guest': 'app01'}]
    assert oct(os.stat(record).st_mode & 0o777) == '0o600'
    assert result['changes'] == ['app01: pinned 192.168.122.77 for %s in network default' % APP]


def test_the_second_run_changes_nothing(record):
    params = {'names': ['app01'], 'record_path': record}
    run(FakeModule(params, answers()))
    module = FakeModule(params, answers(extra_reservation="<host mac='%s' ip='192.168.122.77'/>" % APP))
    result = run(module)
    assert result['changed'] is False and not net_updates(module)


def test_a_guest_that_left_the_inventory_loses_exactly_its_pin(record):
    run(FakeModule({'names': ['app01'], 'record_path': record}, answers()))
    module = FakeModule({'names': ['web01'], 'declared': {'web01': '192.168.122.10'}, 'record_path': record},
                        answers(extra_reservation="<host mac='%s' ip='192.168.122.77'/>" % APP))
    result = run(module)
    assert net_updates(module) == [
        'net-update default delete ip-dhcp-host %s --live --config' % APP_XML]
    assert result['pins'] == [] and not os.path.exists(record)


def test_a_declared_address_reserved_to_another_domain_is_refused_naming_both(record):
    module = FakeModule({'names': ['app01'], 'declared': {'app01': '192.168.122.10'}, 'record_path': record},
                        answers())
    result = run(module)
    assert result['failed'] is True
    assert 'app01 is given 192.168.122.10, which network default reserves for %s (web01)' % WEB in result['msg']
    assert 'app01 is given 192.168.122.10, which network default has leased to %s (web01)' % WEB in result['msg']
    assert not net_updates(module) and not os.path.exists(record)


def test_check_mode_reports_and_writes_nothing(record):
    module = FakeModule({'names': ['app01'], 'record_path': record}, answers(), check_mode=True)
    result = run(module)
    assert result['changed'] is True and result['changes']
    assert not net_updates(module) and not os.path.exists(record)


def test_absent_removes_every_recorded_pin(record):
    run(FakeModule({'names': ['app01'], 'record_path': record}, answers()))
    module = FakeModule({'state': 'absent', 'record_path': record},
                        answers(extra_reservation="<host mac='%s' ip='192.168.122.77'/>" % APP))
    result = run(module)
    assert result['changed'] is True and result['pins'] == []
    assert net_updates(module) == [
        'net-update default delete ip-dhcp-host %s --live --config' % APP_XML]


@pytest.mark.parametrize('names, declared, expected', [
    (['ghost'], {}, {'name': 'ghost', 'reason': 'no libvirt domain of that name on this host'}),
])
def test_unresolved_guests_are_returned_with_the_reason(record, names, declared, expected):
    result = run(FakeModule({'names': names, 'declared': declared, 'record_path': record}, answers()))
    assert result['unresolved'] == [expected]


def test_a_bad_declared_address_fails_naming_the_guest(record):
    result = run(FakeModule({'names': ['web01'], 'declared': {'web01': '192.168.122.10\n'}, 'record_path': record},
                            answers()))
    assert result['failed'] is True and "guest web01: address of web01 '192.168.122.10\\n' is not an IP address" in \
        result['msg']
