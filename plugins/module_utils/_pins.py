# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Never the wrong guest: address conflicts and DHCP pins in libvirt networks. PRIVATE, pure.

A forward points at an address. If libvirt hands that address to another domain (its lease
expired while the guest was off, or another MAC holds a reservation for it), the forward
delivers to the wrong machine. ``check`` finds every such conflict; ``plan`` works out the DHCP
host reservations ("pins") that make libvirt hand each exposed guest the address its forwards use.
Only pins this collection made (the record) are ever changed or removed; the record is written
before a pin is made (``plan`` orders the actions, the module records each one first), so a pin in
libvirt is never one the record does not know. ``agent_address_refusal`` decides whether an address
the guest agent reports (the guest's word) may be used at all, ``claimed_address_refusal`` the same of
an address the guest side of the inventory declares.
"""

from __future__ import annotations

import ipaddress
import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

MAC_RE = re.compile(r'[0-9a-f]{2}(?::[0-9a-f]{2}){5}', re.ASCII)


@dataclass(frozen=True, order=True)
class Pin:
    network: str
    mac: str
    ip: str
    guest: str = ''

    def matches(self, other):
        return (self.network, self.mac, self.ip) == (other.network, other.mac, other.ip)

    def as_dict(self):
        return {'network': self.network, 'mac': self.mac, 'ip': self.ip, 'guest': self.guest}


def network_of(ip, networks):
    """Names of the libvirt networks whose range holds ``ip``."""
    address = ipaddress.ip_address(ip)
    return [name for name, net in sorted(networks.items())
            if any(iface.version == address.version and address in iface.network for iface in net['ips'])]


def _who(mac, owners, fallback=None):
    name = owners.get(mac)
    return '%s (%s)' % (mac, name) if name else ('%s (%s)' % (mac, fallback) if fallback else mac)


def check(guests, networks, leases, owners, record):
    """Every address conflict, as one message each naming both guests.

    guests: [{name, ip, mac, network}] (mac/network None when not known); networks: {name: parsed
    net-dumpxml}; leases: {network: [{mac, address, hostname}]}; owners: {mac: domain name};
    record: the Pins this collection made (a reservation of ours for a guest's MAC may be moved).
    """
    errors = []
    by_ip = {}
    for guest in guests:
        if guest.get('ip'):
            by_ip.setdefault(guest['ip'], []).append(guest['name'])
    for ip, names in sorted(by_ip.items()):
        if len(set(names)) > 1:
            errors.append('guests %s are all given %s' % (' and '.join(sorted(set(names))), ip))
    ours = {(pin.network, pin.mac, pin.ip) for pin in record}
    for guest in guests:
        ip, mac = guest.get('ip'), guest.get('mac')
        if not ip:
            continue
        for name in network_of(ip, networks):
            for reservation in networks[name]['reservations']:
                if reservation['ip'] == ip and reservation['mac'] != mac:
                    if stale_pin(record, name, reservation['mac'], ip, guest['name']):
                        continue          # our pin of this guest's former MAC: plan moves it
                    made = next((p for p in record if (p.network, p.mac, p.ip) == (name, reservation['mac'], ip)), None)
                    errors.append('%s is given %s, which network %s reserves for %s%s'
                                  % (guest['name'], ip, name, _who(reservation['mac'], owners, reservation['name']),
                                     ' (a pin kvmnet.nat made for %s)' % (made.guest or 'another guest') if made else ''))
                elif mac and reservation['mac'] == mac and reservation['ip'] != ip and \
                        ipaddress.ip_address(reservation['ip']).version == ipaddress.ip_address(ip).version and \
                        (name, mac, reservation['ip']) not in ours:
                    errors.append('%s is given %s, but network %s reserves %s for its MAC %s (a reservation '
                                  'kvmnet.nat did not make: change it or the inventory)'
                                  % (guest['name'], ip, name, reservation['ip'], mac))
            for lease in leases.get(name, []):
                if lease['address'] == ip and lease['mac'] != mac and \
                        not stale_pin(record, name, lease['mac'], ip, guest['name']):
                    errors.append('%s is given %s, which network %s has leased to %s'
                                  % (guest['name'], ip, name, _who(lease['mac'], owners, lease['hostname'])))
    return errors


def stale_pin(record, network, mac, ip, guest):
    """Whether the reservation of ``ip`` for ``mac`` in ``network`` is a pin this collection made for
    ``guest`` when the guest had that MAC: the guest's MAC changed since, and the pin is ours to move."""
    return any((p.network, p.mac, p.ip, p.guest) == (network, mac, ip, guest) for p in record)


def agent_address_refusal(name, ip, mac, network, leases, owners, neighbour):
    """Why the address ``ip`` that the guest agent of domain ``name`` reports may not be used, or None.

    The agent's answer is the guest's word: a guest (or whoever controls it) can report a neighbour's
    address, and a forward and a pin to it would take the neighbour's traffic. It is used only when
    (a) it lies in the libvirt network ``network`` (parsed net-dumpxml, or None) of the domain's
    interface with MAC ``mac``, (b) no reservation or lease of another MAC in that network (``leases``)
    claims it, and (c) on the network's bridge the host's neighbour table shows ``mac`` for it.
    ``neighbour(bridge, ip)`` reads that entry ({'mac': lladdr or None, 'problem': why there is none});
    it is called only when (a) and (b) hold. ``owners``: {mac: domain name}, to name the other machine.
    """
    return _guest_word_refusal('the guest agent reports %s' % ip, ip, mac, network, leases, owners, neighbour)


def claimed_address_refusal(name, ip, mac, network, leases, owners, neighbour):
    """Why the address ``ip`` that the guest side of the inventory declares for domain ``name`` (its
    ``expose_guest_ip``) may not be used, or None.

    The guest side is written by a less-trusted team, so its address is the guest's word too: checked
    as agent_address_refusal checks an agent's, and also refused when (b2) the domain's own MAC holds a
    lease on another address of the same family in that network (the guest's address is that one).
    """
    return _guest_word_refusal('the guest side declares %s' % ip, ip, mac, network, leases, owners, neighbour,
                               own_lease=True)


def _guest_word_refusal(says, ip, mac, network, leases, owners, neighbour, own_lease=False):
    address = ipaddress.ip_address(ip)
    if network is None or not mac:
        return '%s, which is on no libvirt network the domain has an interface in' % says
    if not any(i.version == address.version and address in i.network for i in network['ips']):
        return '%s, outside network %s' % (says, network['name'])
    for reservation in network['reservations']:
        if reservation['ip'] == ip and reservation['mac'] != mac:
            return '%s, which network %s reserves for %s' \
                % (says, network['name'], _who(reservation['mac'], owners, reservation['name']))
    for lease in leases:
        if lease['address'] == ip and lease['mac'] != mac:
            return '%s, which network %s has leased to %s' \
                % (says, network['name'], _who(lease['mac'], owners, lease['hostname']))
    own = [lease['address'] for lease in leases if own_lease and lease['mac'] == mac and
           ipaddress.ip_address(lease['address']).version == address.version]
    if own and ip not in own:
        return '%s, but network %s has leased %s to this guest\'s own MAC %s (its address is that one)' \
            % (says, network['name'], ' and '.join(own), mac)
    bridge = network.get('bridge')
    if not bridge:
        return '%s, and network %s has no bridge on which to check who answers for it' % (says, network['name'])
    found = neighbour(bridge, ip)
    if not found.get('mac'):
        return '%s, and nothing could be seen answering for it on %s (%s), so it is not believed' \
            % (says, bridge, found.get('problem') or 'no neighbour entry')
    if found['mac'] != mac:
        return '%s, but on %s %s answers for it, not this guest\'s %s (another machine\'s address, or a forged ' \
               'one)' % (says, bridge, _who(found['mac'], owners), mac)
    return None


def plan(guests, networks, record, pin):
    """(actions, new record, notes): the pins to add, move or remove so that every guest on a libvirt
    network with DHCP is pinned to its address (when ``pin``), and no pin of ours is left for a
    guest that is gone or for a MAC a guest no longer has. Actions are ('add'|'modify'|'delete', Pin),
    removals first (so a stale pin frees its address before a new one takes it)."""
    wanted, notes = [], []
    if pin:
        for guest in guests:
            net = networks.get(guest.get('network') or '')
            if not guest.get('ip') or not guest.get('mac') or net is None:
                continue
            if ipaddress.ip_address(guest['ip']).version != 4:
                notes.append('%s: %s not pinned (kvmnet.nat pins IPv4 addresses only)' % (guest['name'], guest['ip']))
            elif not net['dhcp']:
                notes.append('%s: %s not pinned (network %s serves no DHCP)' % (guest['name'], guest['ip'], net['name']))
            else:
                wanted.append(Pin(net['name'], guest['mac'], guest['ip'], guest['name']))
    actions, kept = [], []
    for want in wanted:
        live = networks[want.network]['reservations']
        if any(r['mac'] == want.mac and r['ip'] == want.ip for r in live):
            if any(p.matches(want) for p in record):
                kept.append(want)             # ours, already right
            continue                          # right, and someone else's: leave it and its ownership
        moved = any(p.network == want.network and p.mac == want.mac and r['mac'] == p.mac and r['ip'] == p.ip
                    for p in record for r in live)
        actions.append(('modify' if moved else 'add', want))
        kept.append(want)
    wanted_keys = {(p.network, p.mac) for p in wanted}
    removals = []
    for old in sorted(set(record)):
        if (old.network, old.mac) in wanted_keys:
            continue
        live = networks.get(old.network, {}).get('reservations', [])
        if any(r['mac'] == old.mac and r['ip'] == old.ip for r in live):
            removals.append(('delete', old))
        else:
            notes.append('pin %s %s in %s is gone or was changed by someone else; forgotten, not touched'
                         % (old.mac, old.ip, old.network))
    return removals + actions, sorted(set(kept)), notes


def host_xml(pin):
    """The ``<host mac=.. ip=../>`` of a pin, from checked values (never pasted strings)."""
    if not MAC_RE.fullmatch(pin.mac):
        raise ValueError('MAC %r is not a MAC address' % (pin.mac,))
    element = ET.Element('host', {'mac': pin.mac, 'ip': str(ipaddress.IPv4Address(pin.ip))})
    return ET.tostring(element, encoding='unicode')


class RecordError(ValueError):
    """The record of pins is not what this collection writes: what is wrong with it."""


RECORD_FORMAT = '{"version": 1, "pins": [{"network": ..., "mac": ..., "ip": ..., "guest": ...}, ...]}'


def load_record(text):
    """The record of pins this collection made, from its JSON text (empty when the file is empty).

    Anything else than what dump_record writes is a RecordError saying what is wrong: a record read
    as empty would make every pin in it "someone else's", never moved or removed again.
    """
    if not text.strip():
        # dump_record never writes an empty file (no pins: the file is removed); an empty one is what a
        # crash or a bad disk leaves, and reading it as "no pins" would disown every pin it held
        raise RecordError('it is empty (kvmnet.nat never writes an empty record: it removes the file instead)')
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise RecordError('it is not JSON (%s)' % exc) from None
    if not isinstance(data, dict):
        raise RecordError('it holds %s, not an object %s' % (_kind(data), RECORD_FORMAT))
    version = data.get('version', 1)
    if isinstance(version, bool) or not isinstance(version, int) or version != 1:
        raise RecordError('it is of version %r, this kvmnet.nat reads version 1' % (data.get('version'),))
    if not isinstance(data.get('pins'), list):
        raise RecordError('its "pins" is %s, not a list' % ('missing' if 'pins' not in data else _kind(data['pins'])))
    pins = []
    for number, item in enumerate(data['pins'], 1):
        if not isinstance(item, dict):
            raise RecordError('pin %d is %s, not an object' % (number, _kind(item)))
        missing = [key for key in ('network', 'mac', 'ip') if not isinstance(item.get(key), str) or not item[key]]
        if missing:
            raise RecordError('pin %d has no %s (or not as a string)' % (number, ', '.join(missing)))
        mac = item['mac'].lower()
        if not MAC_RE.fullmatch(mac):
            raise RecordError('pin %d: mac %r is not a MAC address' % (number, item['mac']))
        try:
            ip = str(ipaddress.IPv4Address(item['ip']))
        except ValueError:
            raise RecordError('pin %d: ip %r is not an IPv4 address' % (number, item['ip'])) from None
        guest = item.get('guest', '')
        if not isinstance(guest, str):
            raise RecordError('pin %d: guest is %s, not a string' % (number, _kind(guest)))
        pins.append(Pin(item['network'], mac, ip, guest))
    return sorted(set(pins))


def _kind(value):
    if value is None:
        return 'null'
    return {bool: 'a boolean', int: 'a number', float: 'a number', str: 'a string', list: 'a list',
            dict: 'an object'}.get(type(value), type(value).__name__)


def dump_record(pins):
    return json.dumps({'version': 1, 'pins': [pin.as_dict() for pin in sorted(pins)]}, indent=1) + '\n'
