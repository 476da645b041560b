# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Never the wrong guest: address conflicts and pins, from parsed libvirt data."""

from __future__ import annotations

import ipaddress

import pytest

from ansible_collections.kvmnet.nat.plugins.module_utils import _pins as P

WEB, APP, OTHER = '52:54:00:4b:01:10', '52:54:00:aa:00:01', '52:54:00:ee:00:09'


def network(reservations=(), dhcp=True):
    return {'default': {'name': 'default', 'bridge': 'virbr0', 'ips': [ipaddress.ip_interface('192.168.122.1/24')],
                        'dhcp': dhcp, 'active': True,
                        'reservations': [{'mac': m, 'ip': ip, 'name': n, 'family': 'ipv4'}
                                         for m, ip, n in reservations]}}


def guest(name, ip, mac, net='default'):
    return {'name': name, 'ip': ip, 'mac': mac, 'network': net}


OWNERS = {WEB: 'web01', APP: 'app01', OTHER: 'old01'}


@pytest.mark.parametrize('guests, reservations, leases, record, expected', [
    # a declared address reserved for another domain: refused, naming both
    ([guest('app01', '192.168.122.10', APP)], [(WEB, '192.168.122.10', 'web01')], [], [],
     ['app01 is given 192.168.122.10, which network default reserves for 52:54:00:4b:01:10 (web01)']),
    # leased to another domain (e.g. after this guest's lease expired): refused
    ([guest('app01', '192.168.122.77', APP)], [], [{'mac': OTHER, 'address': '192.168.122.77', 'hostname': None}], [],
     ['app01 is given 192.168.122.77, which network default has leased to 52:54:00:ee:00:09 (old01)']),
    # a guest that is not a libvirt domain, given an address a domain holds
    ([guest('ext', '192.168.122.10', None, None)], [(WEB, '192.168.122.10', None)], [], [],
     ['ext is given 192.168.122.10, which network default reserves for 52:54:00:4b:01:10 (web01)']),
    # the guest's own MAC reserved for another address by someone else: refused
    ([guest('web01', '192.168.122.11', WEB)], [(WEB, '192.168.122.10', 'web01')], [], [],
     ['web01 is given 192.168.122.11, but network default reserves 192.168.122.10 for its MAC 52:54:00:4b:01:10 '
      '(a reservation kvmnet.nat did not make: change it or the inventory)']),
    # ... but by us: we move it (no conflict)
    ([guest('web01', '192.168.122.11', WEB)], [(WEB, '192.168.122.10', None)], [],
     [P.Pin('default', WEB, '192.168.122.10', 'web01')], []),
    # two guests given one address
    ([guest('a', '192.168.122.20', APP), guest('b', '192.168.122.20', OTHER)], [], [], [],
     ['guests a and b are all given 192.168.122.20']),
    # its own lease and reservation: fine
    ([guest('web01', '192.168.122.10', WEB)], [(WEB, '192.168.122.10', 'web01')],
     [{'mac': WEB, 'address': '192.168.122.10', 'hostname': 'web01'}], [], []),
    # outside every libvirt network: nothing to check
    ([guest('far', '10.9.9.9', None, None)], [(WEB, '10.9.9.9', None)], [], [], []),
])
def test_conflicts_name_both_guests(guests, reservations, leases, record, expected):
    assert P.check(guests, network(reservations), {'default': leases}, OWNERS, record) == expected


def actions(result):
    return [(action, pin.mac, pin.ip) for action, pin in result[0]]


def test_a_new_guest_is_pinned_and_recorded():
    result = P.plan([guest('app01', '192.168.122.77', APP)], network(), [], True)
    assert actions(result) == [('add', APP, '192.168.122.77')]
    assert result[1] == [P.Pin('default', APP, '192.168.122.77', 'app01')]


def test_a_reservation_that_is_already_right_is_left_alone_and_not_taken_over():
    result = P.plan([guest('web01', '192.168.122.10', WEB)], network([(WEB, '192.168.122.10', 'web01')]), [], True)
    assert result == ([], [], [])


def test_our_pin_moves_with_the_declared_address():
    record = [P.Pin('default', WEB, '192.168.122.10', 'web01')]
    result = P.plan([guest('web01', '192.168.122.11', WEB)], network([(WEB, '192.168.122.10', None)]), record, True)
    assert actions(result) == [('modify', WEB, '192.168.122.11')]
    assert result[1] == [P.Pin('default', WEB, '192.168.122.11', 'web01')]


def test_a_guest_that_left_loses_exactly_its_pin():
    record = [P.Pin('default', APP, '192.168.122.77', 'app01'), P.Pin('default', WEB, '192.168.122.10', 'web01')]
    live = network([(APP, '192.168.122.77', None), (WEB, '192.168.122.10', None), (OTHER, '192.168.122.9', 'admin')])
    result = P.plan([guest('web01', '192.168.122.10', WEB)], live, record, True)
    assert actions(result) == [('delete', APP, '192.168.122.77')]
    assert result[1] == [P.Pin('default', WEB, '192.168.122.10', 'web01')]


def test_a_pin_someone_changed_is_forgotten_not_touched():
    record = [P.Pin('default', APP, '192.168.122.77', 'app01')]
    result = P.plan([], network([(APP, '192.168.122.78', 'admin')]), record, True)
    assert result[0] == [] and result[1] == []
    assert 'gone or was changed by someone else' in result[2][0]


def test_pin_off_removes_our_pins_only():
    record = [P.Pin('default', APP, '192.168.122.77', 'app01')]
    result = P.plan([guest('app01', '192.168.122.77', APP)], network([(APP, '192.168.122.77', None)]), record, False)
    assert actions(result) == [('delete', APP, '192.168.122.77')]


@pytest.mark.parametrize('guests, dhcp, note', [
    ([guest('v6', '2001:db8:122::5', APP)], True, 'not pinned (kvmnet.nat pins IPv4 addresses only)'),
    ([guest('app01', '192.168.122.77', APP)], False, 'not pinned (network default serves no DHCP)'),
])
def test_what_cannot_be_pinned_is_said(guests, dhcp, note):
    result = P.plan(guests, network(dhcp=dhcp), [], True)
    assert result[0] == [] and note in result[2][0]


@pytest.mark.parametrize('pin, ok', [
    (P.Pin('default', APP, '192.168.122.77'), True),
    (P.Pin('default', "52:54:00:aa:00:01' ip='1.2.3.4", '192.168.122.77'), False),
    (P.Pin('default', APP.upper(), '192.168.122.77'), False),
])
def test_host_xml_is_built_from_checked_values(pin, ok):
    if ok:
        assert P.host_xml(pin) == '<host mac="%s" ip="192.168.122.77" />' % APP
    else:
        with pytest.raises(ValueError):
            P.host_xml(pin)


def test_record_round_trip():
    pins = [P.Pin('default', APP, '192.168.122.77', 'app01')]
    assert P.load_record(P.dump_record(pins)) == pins
    assert P.load_record('{"pins": [{"network": "default", "mac": "%s", "ip": "192.168.122.77"}]}' % APP.upper()) == \
        [P.Pin('default', APP, '192.168.122.77', '')]


@pytest.mark.parametrize('text, wrong', [
    ('{"pins": 5}', 'its "pins" is a number, not a list'),
    ('null', 'it holds null, not an object'),
    ('[]', 'it holds a list, not an object'),
    ('{}', 'its "pins" is missing, not a list'),
    ('{"pins": [1]}', 'pin 1 is a number, not an object'),
    ('{"pins": [{"network": "default"}]}', 'pin 1 has no mac, ip (or not as a string)'),
    ('{"pins": [{"network": "default", "mac": "M", "ip": "192.168.122.7"}]}', "pin 1: mac 'M' is not a MAC address"),
    ('{"pins": [{"network": "n", "mac": "%s", "ip": "bad"}]}' % APP, "pin 1: ip 'bad' is not an IPv4 address"),
    ('{"pins": [{"network": "n", "mac": "%s", "ip": "2001:db8::5"}]}' % APP, "ip '2001:db8::5' is not an IPv4 address"),
    ('{"pins": [{"network": "n", "mac": "%s", "ip": "192.168.122.7", "guest": 3}]}' % APP, 'pin 1: guest is a number'),
    ('{"version": 2, "pins": []}', 'it is of version 2, this kvmnet.nat reads version 1'),
    ('{"pins": [', 'it is not JSON'),
    # what a crash or a bad disk leaves: never written by kvmnet.nat (no pins: the file is removed)
    ('', 'it is empty'),
    ('\n  \n', 'it is empty'),
    ('{"version": true, "pins": []}', 'it is of version True'),
    ('{"version": 1.0, "pins": []}', 'it is of version 1.0'),
])
def test_a_corrupt_record_is_refused_saying_what_is_wrong(text, wrong):
    with pytest.raises(P.RecordError) as info:
        P.load_record(text)
    assert wrong in str(info.value)


# -------------------------------------------------------------- a MAC that changed: our stale pin

def test_a_pin_of_the_guests_former_mac_is_ours_to_move_not_another_machines():
    record = [P.Pin('default', OTHER, '192.168.122.10', 'web01')]       # web01 had OTHER when we pinned it
    live = network([(OTHER, '192.168.122.10', None)])
    leases = {'default': [{'mac': OTHER, 'address': '192.168.122.10', 'hostname': 'web01'}]}
    guests = [guest('web01', '192.168.122.10', WEB)]
    assert P.check(guests, live, leases, OWNERS, record) == []
    result = P.plan(guests, live, record, True)
    assert actions(result) == [('delete', OTHER, '192.168.122.10'), ('add', WEB, '192.168.122.10')]   # freed first
    assert result[1] == [P.Pin('default', WEB, '192.168.122.10', 'web01')]


@pytest.mark.parametrize('record, expected', [
    # a pin we made for another guest: still refused, but said to be ours
    ([P.Pin('default', OTHER, '192.168.122.10', 'old01')],
     ['web01 is given 192.168.122.10, which network default reserves for 52:54:00:ee:00:09 (old01) '
      '(a pin kvmnet.nat made for old01)']),
    # not ours at all: another machine's
    ([], ['web01 is given 192.168.122.10, which network default reserves for 52:54:00:ee:00:09 (old01)']),
    # ours for this guest but of another address: not the stale pin of this address
    ([P.Pin('default', OTHER, '192.168.122.11', 'web01')],
     ['web01 is given 192.168.122.10, which network default reserves for 52:54:00:ee:00:09 (old01)']),
])
def test_a_reservation_of_another_mac_is_stale_only_when_we_made_it_for_this_guest(record, expected):
    live = network([(OTHER, '192.168.122.10', None)])
    assert P.check([guest('web01', '192.168.122.10', WEB)], live, {}, OWNERS, record) == expected


@pytest.mark.parametrize('record, reservations, expected', [
    # a move whose net-update failed left both places recorded: the live one is moved, not added again
    ([P.Pin('default', WEB, '192.168.122.10', 'web01'), P.Pin('default', WEB, '192.168.122.11', 'web01')],
     [(WEB, '192.168.122.10', None)], [('modify', WEB, '192.168.122.11')]),
    # ... also when the new place sorts first in the record
    ([P.Pin('default', WEB, '192.168.122.11', 'web01'), P.Pin('default', WEB, '192.168.122.2', 'web01')],
     [(WEB, '192.168.122.2', None)], [('modify', WEB, '192.168.122.11')]),
    # an add that failed is recorded but not live: added again
    ([P.Pin('default', WEB, '192.168.122.11', 'web01')], [], [('add', WEB, '192.168.122.11')]),
    ([P.Pin('default', WEB, '192.168.122.11', 'web01')], [(OTHER, '192.168.122.9', 'admin')],
     [('add', WEB, '192.168.122.11')]),
    # removals come before additions
    ([P.Pin('default', APP, '192.168.122.77', 'app01')], [(APP, '192.168.122.77', None)],
     [('delete', APP, '192.168.122.77'), ('add', WEB, '192.168.122.11')]),
])
def test_plan_after_a_run_that_failed_half_way(record, reservations, expected):
    result = P.plan([guest('web01', '192.168.122.11', WEB)], network(reservations), record, True)
    assert actions(result) == expected
    assert result[1] == [P.Pin('default', WEB, '192.168.122.11', 'web01')]


# -------------------------------------------------------------- an address only the guest agent reports

NET = network([(OTHER, '192.168.122.30', 'db01')])['default']
SEEN = {'192.168.122.20': {'mac': OTHER, 'state': 'REACHABLE', 'problem': None},
        '192.168.122.21': {'mac': WEB, 'state': 'REACHABLE', 'problem': None},
        '192.168.122.22': {'mac': None, 'state': 'FAILED', 'problem': 'its neighbour entry is FAILED, nothing answered'},
        '192.168.122.23': {'mac': None, 'state': None, 'problem': 'the ip command (iproute2) is missing, needed to read '
                                                                  'the neighbour table'}}
LEASED = [{'mac': APP, 'address': '192.168.122.77', 'hostname': 'app01'},
          {'mac': WEB, 'address': '192.168.122.21', 'hostname': 'web01'}]


@pytest.mark.parametrize('ip, mac, net, refusal, asked', [
    # the example: another VM's static address (no lease, no reservation) answers with its own MAC
    ('192.168.122.20', WEB, NET, "the guest agent reports 192.168.122.20, but on virbr0 52:54:00:ee:00:09 (old01) "
                                 "answers for it, not this guest's 52:54:00:4b:01:10 (another machine's address, "
                                 "or a forged one)", True),
    # the guest itself answers: used
    ('192.168.122.21', WEB, NET, None, True),
    # nothing answers (or only a failed entry): not believed
    ('192.168.122.22', WEB, NET, 'the guest agent reports 192.168.122.22, and nothing could be seen answering for it '
                                 'on virbr0 (its neighbour entry is FAILED, nothing answered), so it is not believed',
     True),
    # the neighbour table cannot be read: not believed, with the reason
    ('192.168.122.23', WEB, NET, 'the ip command (iproute2) is missing', True),
    # another MAC's reservation or lease: refused before anyone is asked
    ('192.168.122.30', WEB, NET, 'the guest agent reports 192.168.122.30, which network default reserves for '
                                 '52:54:00:ee:00:09 (old01)', False),
    ('192.168.122.77', WEB, NET, 'the guest agent reports 192.168.122.77, which network default has leased to '
                                 '52:54:00:aa:00:01 (app01)', False),
    # outside the domain's network, or on no libvirt network
    ('10.0.0.5', WEB, NET, 'the guest agent reports 10.0.0.5, outside network default', False),
    ('192.168.122.21', None, None, 'on no libvirt network the domain has an interface in', False),
    # a network without a bridge cannot be checked
    ('192.168.122.21', WEB, dict(NET, bridge=None), 'network default has no bridge on which to check', False),
])
def test_an_agent_address_is_used_only_when_the_guest_itself_answers_for_it(ip, mac, net, refusal, asked):
    calls = []

    def neighbour(bridge, address):
        calls.append((bridge, address))
        return SEEN[address]
    found = P.agent_address_refusal('web01', ip, mac, net, LEASED, OWNERS, neighbour)
    if refusal is None:
        assert found is None
    else:
        assert refusal in (found or ''), found
    assert calls == ([('virbr0', ip)] if asked else [])


# -------------------------------------------------------------- review of issue 19: an address the guest side declares

# app01 (APP) holds a lease on .10; .40 is leased to old01; .30 is reserved for db01 (NET); web01 (WEB) has no lease
CLAIM_LEASES = [{'mac': APP, 'address': '192.168.122.10', 'hostname': 'app01'},
                {'mac': OTHER, 'address': '192.168.122.40', 'hostname': 'old01'}]
CLAIM_SEEN = dict(SEEN, **{'192.168.122.10': {'mac': APP, 'state': 'REACHABLE', 'problem': None}})


def _declares(ip, rest):
    return 'the guest side declares %s%s' % (ip, rest)


@pytest.mark.parametrize('ip, mac, net, refusal, asked', [
    # the review's example: app01 declares .20, another VM's static address (no lease, no reservation), while
    # its own MAC holds a lease on .10: refused, saying which, before anyone is asked
    ('192.168.122.20', APP, NET, _declares('192.168.122.20', ", but network default has leased 192.168.122.10 to this "
                                           "guest's own MAC 52:54:00:aa:00:01 (its address is that one)"), False),
    # its own leased address, and it answers for it: used
    ('192.168.122.10', APP, NET, None, True),
    # a guest without a lease declares the neighbour's static address: the neighbour answers, refused
    ('192.168.122.20', WEB, NET, _declares('192.168.122.20', ", but on virbr0 52:54:00:ee:00:09 (old01) answers for it, "
                                           "not this guest's 52:54:00:4b:01:10 (another machine's address, or a forged "
                                           "one)"), True),
    # ... an address it answers for itself: used
    ('192.168.122.21', WEB, NET, None, True),
    # nothing answers, or the table cannot be read: not believed
    ('192.168.122.22', WEB, NET, _declares('192.168.122.22', ', and nothing could be seen answering for it on virbr0 '
                                           '(its neighbour entry is FAILED, nothing answered), so it is not believed'),
     True),
    ('192.168.122.23', WEB, NET, 'the ip command (iproute2) is missing', True),
    # another MAC's reservation or lease
    ('192.168.122.30', WEB, NET, _declares('192.168.122.30', ', which network default reserves for 52:54:00:ee:00:09 '
                                           '(old01)'), False),
    ('192.168.122.40', WEB, NET, _declares('192.168.122.40', ', which network default has leased to '
                                           '52:54:00:ee:00:09 (old01)'), False),
    # outside the domain's network, on none, or on a network without a bridge
    ('10.0.0.5', WEB, NET, _declares('10.0.0.5', ', outside network default'), False),
    ('192.168.122.21', None, None, _declares('192.168.122.21', ', which is on no libvirt network the domain has an '
                                             'interface in'), False),
    ('192.168.122.21', WEB, dict(NET, bridge=None), 'network default has no bridge on which to check', False),
])
def test_an_address_the_guest_side_declares_is_checked_like_the_agents_and_against_its_own_lease(ip, mac, net, refusal,
                                                                                                 asked):
    calls = []

    def neighbour(bridge, address):
        calls.append((bridge, address))
        return CLAIM_SEEN[address]
    found = P.claimed_address_refusal('app01', ip, mac, net, CLAIM_LEASES, OWNERS, neighbour)
    if refusal is None:
        assert found is None
    else:
        assert refusal in (found or ''), found
    assert calls == ([('virbr0', ip)] if asked else [])


def test_the_review_example_without_the_check_would_be_pinned_to_the_neighbours_address():
    """What the check stands in front of: check() has nothing against .20, and plan() would pin app01's MAC there."""
    guests = [guest('app01', '192.168.122.20', APP)]
    assert P.check(guests, network(), {'default': CLAIM_LEASES}, OWNERS, []) == []
    assert P.plan(guests, network(), [], True)[1] == [P.Pin('default', APP, '192.168.122.20', 'app01')]
    assert P.claimed_address_refusal('app01', '192.168.122.20', APP, network()['default'], CLAIM_LEASES, OWNERS,
                                     lambda bridge, address: CLAIM_SEEN[address]) is not None
