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


DEFAULTS = {'names': [], 'declared': {}, 'claimed': {}, 'pin': True, 'state': 'present', 'record_path': None,
            'uri': 'qemu:///system', 'address_sources': ['lease']}


def FakeModule(params, answers, check_mode=False):  # noqa: N802  (reads like the class it builds)
    """virsh commands are looked up without their "virsh --connect URI" head, others (ip, ping) whole;
    an answer may be a function, called each time (answers that change from one call to the next)."""
    def answer(command):
        args = command.split(' ', 3)[3] if command.startswith('virsh ') else command
        value = next(value for prefix, value in answers.items() if args.startswith(prefix))
        return value() if callable(value) else value
    return fakes.FakeModule(dict(DEFAULTS, **params), answer, check_mode)


def net_updates(module):
    return [c.split(' ', 3)[3] for c in module.commands() if c.startswith('virsh ') and
            c.split(' ', 3)[3].startswith('net-update')]


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


# -------------------------------------------------------------- issue 19: a pin is recorded before it is made

WEB_XML = '<host mac="%s" ip="192.168.122.10" />' % WEB


def without_web01(xml):
    return xml.replace("<host mac='%s' name='web01' ip='192.168.122.10'/>" % WEB, '')


def test_when_the_second_net_update_fails_the_first_pin_is_recorded_and_absent_removes_it(record):
    """The issue's example: two domains share a MAC, libvirt refuses the second pin."""
    replies = iter([(0, 'Updated network default live state\n', ''),
                    (1, '', "error: Requested operation is not valid: there is an existing dhcp host entry in network "
                            "'default' that matches \"<host mac='52:54:00:aa:00:01' ip='192.168.122.10'/>\"")])
    net = answers()
    net.update({'net-dumpxml default': (0, without_web01(NETWORK % (WEB, '')), ''),
                'net-dhcp-leases default': (0, LEASES.splitlines(True)[0], ''),
                'dumpxml web01': (0, domain('web01', APP), ''),    # a clone: web01 has app01's MAC
                'net-update': lambda: next(replies)})
    module = FakeModule({'names': ['app01', 'web01'], 'declared': {'web01': '192.168.122.10', 'app01': '192.168.122.77'},
                         'record_path': record}, net)
    result = run(module)
    assert result['failed'] is True and result['changes'] == ['app01: pinned 192.168.122.77 for %s in network default' % APP]
    assert 'there is an existing dhcp host entry' in result['msg'] and record in result['msg']
    assert len(net_updates(module)) == 2
    with open(record) as handle:
        recorded = json.load(handle)['pins']
    assert {'network': 'default', 'mac': APP, 'ip': '192.168.122.77', 'guest': 'app01'} in recorded
    # libvirt holds the first pin; absent finds it in the record and removes it
    net.update({'net-dumpxml default': (0, without_web01(NETWORK % (WEB, "<host mac='%s' ip='192.168.122.77'/>" % APP)),
                                        ''),
                'net-update': (0, 'Updated network default live state\n', '')})
    module = FakeModule({'state': 'absent', 'record_path': record}, net)
    result = run(module)
    assert net_updates(module) == ['net-update default delete ip-dhcp-host %s --live --config' % APP_XML]
    assert result['pins'] == [] and not os.path.exists(record)


def test_when_a_removal_fails_the_pins_removed_before_it_are_forgotten_and_the_rest_kept(record):
    pins = [{'network': 'default', 'mac': APP, 'ip': '192.168.122.77', 'guest': 'app01'},
            {'network': 'default', 'mac': WEB, 'ip': '192.168.122.10', 'guest': 'web01'}]
    os.makedirs(os.path.dirname(record))
    with open(record, 'w') as out:
        out.write(json.dumps({'version': 1, 'pins': pins}))
    replies = iter([(0, '', ''), (1, '', 'error: Failed to update network default')])
    net = dict(answers(extra_reservation="<host mac='%s' ip='192.168.122.77'/>" % APP), **{'net-update': lambda: next(replies)})
    result = run(FakeModule({'state': 'absent', 'record_path': record}, net))
    assert result['failed'] is True and result['changes'] == ['web01: pin of 192.168.122.10 for %s in network default '
                                                              'removed' % WEB]
    with open(record) as handle:
        assert json.load(handle)['pins'] == pins[:1]       # web01's is gone from libvirt and the record, app01's kept


def test_the_record_holds_a_pin_before_its_net_update_runs(record):
    seen = []

    def net_update():
        with open(record) as handle:
            seen.append([p['ip'] for p in json.load(handle)['pins']])
        return (0, '', '')
    run(FakeModule({'names': ['app01'], 'record_path': record}, dict(answers(), **{'net-update': net_update})))
    assert seen == [['192.168.122.77']]


def test_a_pin_of_the_guests_former_mac_is_moved_not_called_another_machines(record):
    """web01 was pinned by us with MAC OLD; its interface now has WEB: our pin is stale, it moves."""
    old = '52:54:00:0d:00:01'
    os.makedirs(os.path.dirname(record))
    with open(record, 'w') as out:
        out.write(json.dumps({'version': 1, 'pins': [{'network': 'default', 'mac': old, 'ip': '192.168.122.10',
                                                      'guest': 'web01'}]}))
    net = answers()
    net['net-dumpxml default'] = (0, NETWORK % (old, ''), '')
    net['net-dhcp-leases default'] = (0, LEASES.replace(WEB, old), '')
    module = FakeModule({'names': ['web01'], 'declared': {'web01': '192.168.122.10'}, 'record_path': record}, net)
    result = run(module)
    assert result.get('failed') is None, result.get('msg')
    assert net_updates(module) == [
        'net-update default delete ip-dhcp-host <host mac="%s" ip="192.168.122.10" /> --live --config' % old,
        'net-update default add-last ip-dhcp-host %s --live --config' % WEB_XML]
    with open(record) as handle:
        assert json.load(handle)['pins'] == [{'network': 'default', 'mac': WEB, 'ip': '192.168.122.10', 'guest': 'web01'}]


@pytest.mark.parametrize('text, wrong', [
    ('{"pins": 5}', 'its "pins" is a number, not a list'),
    ('null', 'it holds null, not an object'),
    ('[]', 'it holds a list, not an object'),
    ('{"pins": [1]}', 'pin 1 is a number, not an object'),
    ('{"pins": [{"network": "default", "ip": "192.168.122.77"}]}', 'pin 1 has no mac'),
    ('{"pins": [', 'it is not JSON'),
    ('\xff\xfe', 'codec'),
    ('', 'it is empty'),
    ('[' * 100000, 'recursion'),
])
@pytest.mark.parametrize('state', ['present', 'absent'])
def test_a_corrupt_record_is_refused_naming_the_file_and_changing_nothing(record, text, wrong, state):
    os.makedirs(os.path.dirname(record))
    with open(record, 'wb') as out:
        out.write(text.encode('latin-1'))
    module = FakeModule({'names': ['app01'], 'state': state, 'record_path': record}, answers())
    result = run(module)
    assert result['failed'] is True
    assert result['msg'].startswith('the record of the DHCP pins kvmnet.nat made, %s, is corrupt: ' % record)
    assert wrong in result['msg'] and 'nothing was changed' in result['msg'] and 'move it away' in result['msg']
    assert module.commands() == []
    with open(record, 'rb') as handle:
        assert handle.read() == text.encode('latin-1')


@pytest.mark.parametrize('state', ['present', 'absent'])
def test_a_record_path_that_cannot_be_read_is_refused_not_a_traceback(record, state):
    os.makedirs(record)                                   # a directory where the file should be
    module = FakeModule({'names': ['app01'], 'state': state, 'record_path': record}, answers())
    result = run(module)
    assert result['failed'] is True
    assert 'Is a directory' in result['msg'] and 'nothing was changed' in result['msg']
    assert module.commands() == []


# -------------------------------------------------------------- issue 19: an address only the guest agent reports

NEW = '52:54:00:5e:00:01'
DB = '52:54:00:ee:00:09'
AGENT = (' Name       MAC address          Protocol     Address\n---------------------------------\n'
         ' vnet0      %s    ipv4         192.168.122.20/24\n' % NEW)


def agent_answers(neighbour_mac):
    net = answers()
    net.update({
        'list --all --name': (0, 'web01\napp01\nnew01\ndb01\n', ''),
        'dumpxml new01': (0, domain('new01', NEW), ''), 'dumpxml db01': (0, domain('db01', DB), ''),
        'domstate new01': (0, 'running\n', ''),
        'domifaddr new01 --full --source lease': (0, '', ''),
        'domifaddr new01 --full --source agent': (0, AGENT, ''),
        'ip -j addr show': (0, '[{"ifname": "virbr0", "addr_info": [{"local": "192.168.122.1", "prefixlen": 24}]}]', ''),
        'ping ': (1, '', ''),
        'ip -j neigh show dev virbr0 to 192.168.122.20':
            (0, '[{"dst": "192.168.122.20", "lladdr": "%s", "state": ["REACHABLE"]}]' % neighbour_mac
             if neighbour_mac else '[{"dst": "192.168.122.20", "state": ["FAILED"]}]', ''),
    })
    return net


@pytest.mark.parametrize('neighbour, reason', [
    # the issue's example: db01's static address, answered by db01
    (DB, "the guest agent reports 192.168.122.20, but on virbr0 %s (db01) answers for it, not this guest's %s "
         "(another machine's address, or a forged one); give its ip in the inventory if it is right" % (DB, NEW)),
    (None, 'the guest agent reports 192.168.122.20, and nothing could be seen answering for it on virbr0 (its '
           'neighbour entry is FAILED, nothing answered), so it is not believed; give its ip in the inventory if it '
           'is right'),
])
def test_an_agent_address_another_machine_answers_for_is_neither_used_nor_pinned(record, neighbour, reason):
    module = FakeModule({'names': ['new01'], 'record_path': record, 'address_sources': ['lease', 'agent']},
                        agent_answers(neighbour))
    result = run(module)
    assert result['guests'] == [] and result['unresolved'] == [{'name': 'new01', 'reason': reason}]
    assert 'ping -n -q -c 1 -W 1 -I virbr0 192.168.122.20' in module.commands()
    assert not net_updates(module) and not os.path.exists(record)


def test_an_agent_address_the_guest_itself_answers_for_is_used_and_pinned(record):
    module = FakeModule({'names': ['new01'], 'record_path': record, 'address_sources': ['lease', 'agent']},
                        agent_answers(NEW))
    result = run(module)
    assert result['unresolved'] == []
    assert result['guests'] == [{'name': 'new01', 'ip': '192.168.122.20', 'source': 'agent', 'mac': NEW,
                                 'network': 'default', 'pinned': True}]
    assert net_updates(module) == [
        'net-update default add-last ip-dhcp-host <host mac="%s" ip="192.168.122.20" /> --live --config' % NEW]


def test_a_declared_address_is_not_asked_about(record):
    module = FakeModule({'names': ['new01'], 'declared': {'new01': '192.168.122.20'}, 'record_path': record,
                         'address_sources': ['lease', 'agent']}, agent_answers(DB))
    result = run(module)
    assert result['guests'][0]['source'] == 'declared'
    assert not [c for c in module.commands() if c.startswith(('ping', 'ip -j neigh'))]


# -------------------------------------------------------------- review of issue 19: addresses the guest side declares

def claim_answers(seen):
    """agent_answers' lab (app01 leased .77, web01 reserved and leased .10, new01 without a lease, db01 at .20
    without one), where the bridge's neighbour table shows ``seen`` ({address: MAC or None})."""
    net = agent_answers(None)
    for address, mac in seen.items():
        net['ip -j neigh show dev virbr0 to %s' % address] = (
            0, '[{"dst": "%s", "lladdr": "%s", "state": ["REACHABLE"]}]' % (address, mac) if mac
            else '[{"dst": "%s", "state": ["FAILED"]}]' % address, '')
    return net


SEEN = {'192.168.122.20': DB, '192.168.122.77': APP, '192.168.122.33': NEW}
HINT = '; the hypervisor side can declare its ip (expose_guests) if it is right'


@pytest.mark.parametrize('name, claimed, seen, reason, asked', [
    # the review's example: app01 declares .20 (db01's static address: no lease, no reservation) while its own
    # MAC holds a lease on .77: refused, saying which, before the bridge is asked
    ('app01', '192.168.122.20', SEEN, "the guest side declares 192.168.122.20, but network default has leased "
                                      "192.168.122.77 to this guest's own MAC %s (its address is that one)%s"
                                      % (APP, HINT), False),
    # a guest without a lease declares db01's address: db01 answers for it
    ('new01', '192.168.122.20', SEEN, "the guest side declares 192.168.122.20, but on virbr0 %s (db01) answers for "
                                      "it, not this guest's %s (another machine's address, or a forged one)%s"
                                      % (DB, NEW, HINT), True),
    # ... nothing answers for it
    ('new01', '192.168.122.20', {'192.168.122.20': None},
     'the guest side declares 192.168.122.20, and nothing could be seen answering for it on virbr0 (its neighbour '
     'entry is FAILED, nothing answered), so it is not believed' + HINT, True),
    # web01's reserved and leased address
    ('new01', '192.168.122.10', SEEN, 'the guest side declares 192.168.122.10, which network default reserves for '
                                      '%s (web01)%s' % (WEB, HINT), False),
    # outside the network, and a domain libvirt does not know
    ('new01', '10.9.9.9', SEEN, 'the guest side declares 10.9.9.9, which is on no libvirt network the domain has an '
                                'interface in' + HINT, False),
    ('ghost', '192.168.122.20', SEEN, 'no libvirt domain of that name on this host', False),
])
def test_an_address_the_guest_side_declares_for_another_machine_is_neither_forwarded_to_nor_pinned(
        record, name, claimed, seen, reason, asked):
    module = FakeModule({'names': [name], 'claimed': {name: claimed}, 'record_path': record}, claim_answers(seen))
    result = run(module)
    assert result.get('failed') is None, result
    assert result['guests'] == [] and result['unresolved'] == [{'name': name, 'reason': reason}]
    assert bool([c for c in module.commands() if c.startswith('ip -j neigh')]) is asked
    assert not net_updates(module) and not os.path.exists(record)


@pytest.mark.parametrize('name, claimed, mac', [
    ('app01', '192.168.122.77', APP),      # its own leased address, and it answers for it
    ('new01', '192.168.122.33', NEW),      # no lease: it answers for the address it declares
])
def test_an_address_the_guest_side_declares_for_itself_is_used_and_pinned(record, name, claimed, mac):
    module = FakeModule({'names': [name], 'claimed': {name: claimed}, 'record_path': record}, claim_answers(SEEN))
    result = run(module)
    assert result['unresolved'] == []
    assert result['guests'] == [{'name': name, 'ip': claimed, 'source': 'claimed', 'mac': mac, 'network': 'default',
                                 'pinned': True}]
    assert 'ip -j neigh show dev virbr0 to %s' % claimed in module.commands()
    assert net_updates(module) == [
        'net-update default add-last ip-dhcp-host <host mac="%s" ip="%s" /> --live --config' % (mac, claimed)]


def test_the_hypervisor_sides_address_keeps_todays_behaviour(record):
    """The same address the guest side may not claim, declared by the hypervisor side: used as written."""
    module = FakeModule({'names': ['new01'], 'declared': {'new01': '192.168.122.20'}, 'record_path': record},
                        claim_answers(SEEN))
    result = run(module)
    assert result['guests'][0]['source'] == 'declared' and result['unresolved'] == []
    assert not [c for c in module.commands() if c.startswith(('ping', 'ip -j neigh'))]


def test_a_guest_given_an_address_on_both_sides_is_refused(record):
    result = run(FakeModule({'names': ['new01'], 'declared': {'new01': '192.168.122.20'},
                             'claimed': {'new01': '192.168.122.33'}, 'record_path': record}, claim_answers(SEEN)))
    assert result['failed'] is True and 'guest new01 is given an address both in declared (192.168.122.20) and in ' \
        'claimed (192.168.122.33)' in result['msg']
