# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Inventory queries of kvmnet.nat: turn inventory into the forwards of one hypervisor."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

try:
    import jmespath
except ImportError:  # reported when the filter is used, not at import time
    jmespath = None

# The guest-side variables a guest host may set, and what they become in an exposure.
GUEST_VARS = ('expose_hypervisor', 'expose_ports', 'expose_guest_name', 'expose_guest_ip', 'expose_masquerade')
QUERY = ('[?expose_hypervisor == wanted_hypervisor].{name: expose_guest_name || inventory_hostname, '
         'ip: expose_guest_ip, masquerade: expose_masquerade, ports: expose_ports || `[]`}')


def guest_exposures(hostvars, hypervisor):
    """Exposures declared on guest hosts whose ``expose_hypervisor`` is ``hypervisor``.

    Returns ``[{name, ip, masquerade, ports}]`` in the shape of the role's ``expose_guests``;
    ``name`` is ``expose_guest_name`` or the inventory name.
    """
    if jmespath is None:
        raise AnsibleFilterError('kvmnet.nat.guest_exposures needs the Python package jmespath on the controller')
    # the wanted name travels as data in every record: nothing from the inventory is pasted into the query
    hosts = []
    for name in hostvars:
        variables = hostvars[name]
        hosts.append(dict({key: variables.get(key) for key in GUEST_VARS}, inventory_hostname=name,
                          wanted_hypervisor=str(hypervisor)))
    result = jmespath.search(QUERY, hosts) or []
    return [{key: value for key, value in item.items() if value is not None} for item in result]


def exposure_forwards(exposures):
    """Flatten exposures (a guest with its ports) into the forwards of kvmnet.nat.forwards."""
    forwards = []
    for guest in exposures or []:
        if 'name' not in guest:
            raise AnsibleFilterError('an exposure without a name: %r' % (guest,))
        if not guest.get('ip'):
            raise AnsibleFilterError('guest %s has no ip; resolve it (kvmnet.nat.guest_info) first' % guest['name'])
        for port in guest.get('ports') or []:
            if 'host' not in port:
                raise AnsibleFilterError('guest %s: a port without "host": %r' % (guest['name'], port))
            forward = {'guest': guest['name'], 'guest_ip': guest['ip'], 'host_port': port['host'],
                       'guest_port': port.get('guest', port['host']), 'proto': port.get('proto', 'tcp'),
                       'sources': port.get('sources', []), 'masquerade': guest.get('masquerade', 'auto')}
            for optional in ('public_ip', 'in_interface', 'allow_in_use'):
                if port.get(optional):
                    forward[optional] = port[optional]
            forwards.append(forward)
    return forwards


def resolve_exposures(exposures, guests):
    """Fill in ``ip`` from kvmnet.nat.guest_info's ``guests`` for exposures that lack one.

    Returns ``{exposures: [...], unresolved: [{name, reason}]}``: ``exposures`` holds only the
    exposures with an address, ``unresolved`` says why each other one has none.
    """
    known = {guest['name']: guest for guest in guests or []}
    resolved, unresolved = [], []
    for exposure in exposures or []:
        if exposure.get('ip'):
            resolved.append(exposure)
            continue
        guest = known.get(exposure.get('name'))
        if guest is None:
            unresolved.append({'name': exposure.get('name'), 'reason': 'no libvirt domain of that name on this host'})
        elif not guest.get('ipv4'):
            unresolved.append({'name': exposure['name'],
                               'reason': 'the domain is %s and has no IPv4 address (no DHCP lease, no guest agent '
                                         'answer); give its ip in the inventory or start it' % guest.get('state')})
        else:
            resolved.append(dict(exposure, ip=guest['ipv4'][0], **_first_network_interface(guest)))
    return {'exposures': resolved, 'unresolved': unresolved}


def _first_network_interface(guest):
    """mac and network of the guest's first interface on a libvirt network (for DHCP pinning)."""
    for interface in guest.get('interfaces') or []:
        if interface.get('mac') and interface.get('network'):
            return {'mac': interface['mac'], 'network': interface['network']}
    return {}


class FilterModule:
    def filters(self):
        return {'guest_exposures': guest_exposures, 'exposure_forwards': exposure_forwards,
                'resolve_exposures': resolve_exposures}
