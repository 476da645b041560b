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


def test_record_round_trip_and_garbage():
    pins = [P.Pin('default', APP, '192.168.122.77', 'app01')]
    assert P.load_record(P.dump_record(pins)) == pins
    assert P.load_record('') == []
    assert P.load_record('{"pins": [{"network": "default"}, {"network": "n", "mac": "M", "ip": "bad"}]}') == []
