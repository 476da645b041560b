# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Never the wrong guest: address conflicts and DHCP pins in libvirt networks. PRIVATE, pure.

A forward points at an address. If libvirt hands that address to another domain (its lease
expired while the guest was off, or another MAC holds a reservation for it), the forward
delivers to the wrong machine. ``check`` finds every such conflict; ``plan`` works out the DHCP
host reservations ("pins") that make libvirt hand each exposed guest the address its forwards use.
Only pins this collection made (the record) are ever changed or removed.
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
                    errors.append('%s is given %s, which network %s reserves for %s'
                                  % (guest['name'], ip, name, _who(reservation['mac'], owners, reservation['name'])))
                elif mac and reservation['mac'] == mac and reservation['ip'] != ip and \
                        ipaddress.ip_address(reservation['ip']).version == ipaddress.ip_address(ip).version and \
                        (name, mac, reservation['ip']) not in ours:
                    errors.append('%s is given %s, but network %s reserves %s for its MAC %s (a reservation '
                                  'kvmnet.nat did not make: change it or the inventory)'
                                  % (guest['name'], ip, name, reservation['ip'], mac))
            for lease in leases.get(name, []):
                if lease['address'] == ip and lease['mac'] != mac:
                    errors.append('%s is given %s, which network %s has leased to %s'
                                  % (guest['name'], ip, name, _who(lease['mac'], owners, lease['hostname'])))
    return errors


def plan(guests, networks, record, pin):
    """(actions, new record, notes): the pins to add, move or remove so that every guest on a libvirt
    network with DHCP is pinned to its address (when ``pin``), and no pin of ours is left for a
    guest that is gone. Actions are ('add'|'modify'|'delete', Pin)."""
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
        moved = next((p for p in record if p.network == want.network and p.mac == want.mac), None)
        if moved is not None and any(r['mac'] == moved.mac and r['ip'] == moved.ip for r in live):
            actions.append(('modify', want))
        else:
            actions.append(('add', want))
        kept.append(want)
    wanted_keys = {(p.network, p.mac) for p in wanted}
    for old in record:
        if (old.network, old.mac) in wanted_keys:
            continue
        live = networks.get(old.network, {}).get('reservations', [])
        if any(r['mac'] == old.mac and r['ip'] == old.ip for r in live):
            actions.append(('delete', old))
        else:
            notes.append('pin %s %s in %s is gone or was changed by someone else; forgotten, not touched'
                         % (old.mac, old.ip, old.network))
    return actions, sorted(set(kept)), notes


def host_xml(pin):
    """The ``<host mac=.. ip=../>`` of a pin, from checked values (never pasted strings)."""
    if not MAC_RE.fullmatch(pin.mac):
        raise ValueError('MAC %r is not a MAC address' % (pin.mac,))
    element = ET.Element('host', {'mac': pin.mac, 'ip': str(ipaddress.IPv4Address(pin.ip))})
    return ET.tostring(element, encoding='unicode')


def load_record(text):
    """The record of pins this collection made, from its JSON text (empty when there is none)."""
    if not text:
        return []
    data = json.loads(text)
    pins = []
    for item in data.get('pins', []) if isinstance(data, dict) else []:
        try:
            pins.append(Pin(str(item['network']), str(item['mac']).lower(), str(ipaddress.ip_address(item['ip'])),
                            str(item.get('guest', ''))))
        except (KeyError, TypeError, ValueError):
            continue
    return pins


def dump_record(pins):
    return json.dumps({'version': 1, 'pins': [pin.as_dict() for pin in sorted(pins)]}, indent=1) + '\n'
