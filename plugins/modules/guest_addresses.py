#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: guest_addresses
short_description: Resolve, check and pin the addresses of exposed libvirt guests
version_added: 1.0.0
description:
  - For each guest, takes its declared address or finds it in libvirt (the network's DHCP lease
    first; the guest agent only as M(kvmnet.nat.guest_info) allows it), so forwards can point at it.
  - An address only the guest agent reports is the guest's word. It is used only when it lies in the
    libvirt network of the domain's interface, no reservation or lease of another MAC claims it, and on
    the network's bridge the host's neighbour table shows the domain's own MAC for it (after one C(ping)
    from the bridge makes the host ask who has it). Otherwise the guest is unresolved, with the reason
    (naming the MAC that answers instead, or why none could be seen).
  - An address the guest side of the inventory declares (O(claimed)) is the guest's word too, checked the
    same way, and also refused when the domain's own MAC holds a lease on another address. Addresses of
    the hypervisor side (O(declared)) are the admin's and are not.
  - Refuses, naming both guests, an address that a libvirt network reserves or has leased to another
    MAC, a declared address whose guest's MAC libvirt reserves for another address (unless the
    reservation is one this module made), and one address given to two guests. A forward to such an
    address would reach the wrong machine when the other one gets it.
  - With O(pin), makes sure every guest on a libvirt network with DHCP keeps its address, with a DHCP
    host reservation (live and persistent) for its MAC and address. The reservations it made are recorded
    in O(record_path); only those are ever moved (when the address or the guest's MAC changes) or removed
    (when the guest is not listed any more, or with O(state=absent)). Reservations it did not make are
    never touched.
  - Each pin is recorded before it is made, and forgotten only once it is removed, so a run that fails
    half-way (one C(virsh net-update) refused) leaves every pin it made in the record.
  - A record that is not what this module writes is refused, naming the file and what is wrong, and
    nothing is changed.
author:
  - kvmnet.nat maintainers (!UNKNOWN)
attributes:
  check_mode:
    support: full
    description: Resolves and checks everything, reports the pins it would change, changes nothing.
  diff_mode:
    support: full
    description: Returns the recorded pins before and after.
  idempotent:
    support: full
    description: Guests already pinned to their addresses report C(changed=false).
  platform:
    platforms: posix
    support: full
    description: Hosts with libvirt and C(virsh); C(ip) (iproute2) and C(ping) (iputils) to check guest agent addresses.
options:
  names:
    description: The libvirt domain names of the exposed guests.
    type: list
    elements: str
    default: []
  declared:
    description:
      - Addresses given in the inventory by the hypervisor side (trusted), by guest name. Used as given,
        after the conflict checks. Guests in neither this nor O(claimed) are looked up in libvirt.
    type: dict
    default: {}
  claimed:
    description:
      - Addresses the guest side declared (a guest host's C(expose_guest_ip)), by guest name; checked like
        the guest agent's. One is used only when it lies in the libvirt network of the domain's interface,
        no reservation or lease of another MAC claims it, the domain's own MAC holds no lease on another
        address of that family (naming it), and on the network's bridge the neighbour table shows the
        domain's own MAC for it. Otherwise the guest is unresolved, with the reason, and is neither
        forwarded to nor pinned.
      - A guest named both here and in O(declared) is refused.
    type: dict
    default: {}
    version_added: 1.1.0
  pin:
    description:
      - Reserve each guest's address in its libvirt network's DHCP (IPv4 only).
      - With V(false), pins made earlier are removed (nothing else changes).
    type: bool
    default: true
  state:
    description: V(absent) removes every pin this module made and its record.
    type: str
    choices: [present, absent]
    default: present
  record_path:
    description: Where the pins this module made are recorded (JSON, mode 0600).
    type: path
    default: /var/lib/kvmnet-nat/pins.json
  uri:
    description: libvirt connection URI.
    type: str
    default: qemu:///system
  address_sources:
    description: Where looked-up addresses come from, in this order (see M(kvmnet.nat.guest_info)).
    type: list
    elements: str
    choices: [lease, agent]
    default: [lease, agent]
notes:
  - Checking a guest agent address or a claimed one sends one ping from the network's bridge to it, also in check mode.
  - A guest whose address changes because of a new pin gets it from libvirt's DHCP at its next lease
    renewal; until then its forwards point at the new address.
seealso:
  - module: kvmnet.nat.guest_info
"""

EXAMPLES = r"""
- name: Resolve, check and pin the exposed guests' addresses
  kvmnet.nat.guest_addresses:
    names: [web01, app01]
    declared: {web01: 192.168.122.10}
    claimed: {app01: 192.168.122.77}      # a guest host's expose_guest_ip: checked like the guest agent's
  register: addresses

- name: Remove every pin kvmnet.nat made
  kvmnet.nat.guest_addresses:
    state: absent
"""

RETURN = r"""
guests:
  description: The guests that have an address.
  returned: always
  type: list
  elements: dict
  sample:
    - {name: app01, ip: 192.168.122.77, source: lease, mac: "52:54:00:12:34:56", network: default, pinned: true}
unresolved:
  description: The guests without an address, each with the reason.
  returned: always
  type: list
  elements: dict
  sample: [{name: ghost01, reason: no libvirt domain of that name on this host}]
pins:
  description: The pins this module made, after the run.
  returned: always
  type: list
  elements: dict
  sample: [{network: default, mac: "52:54:00:12:34:56", ip: 192.168.122.77, guest: app01}]
record_changed:
  description: Whether the record of pins changed (or would change in check mode).
  returned: always
  type: bool
  sample: false
changes:
  description: What changed (or would change in check mode), one line each.
  returned: always
  type: list
  elements: str
  sample: ["app01: pinned 192.168.122.77 for 52:54:00:12:34:56 in network default"]
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kvmnet.nat.plugins.module_utils import _command
from ansible_collections.kvmnet.nat.plugins.module_utils import _files
from ansible_collections.kvmnet.nat.plugins.module_utils import _forward
from ansible_collections.kvmnet.nat.plugins.module_utils import _libvirt
from ansible_collections.kvmnet.nat.plugins.module_utils import _pins
from ansible_collections.kvmnet.nat.plugins.module_utils import _routes


class _Virsh:
    def __init__(self, module):
        self.module = module
        self.path = module.get_bin_path('virsh', required=True)
        self.uri = module.params['uri']

    def __call__(self, *args):
        return _libvirt._virsh(self.module, self.path, self.uri, *args)


def _interface_in(domain, ip, networks):
    """(mac, network) of the domain's interface on the libvirt network holding ``ip``."""
    holding = set(_pins.network_of(ip, networks))
    for iface in domain['interfaces']:
        if iface.get('network') in holding and iface.get('mac'):
            return iface['mac'], iface['network']
    return None, None


def _agent_refusal(module, virsh, name, found, ip, networks, leases, owners, refusal=_pins.agent_address_refusal):
    """Why the agent-reported (or, with ``refusal=_pins.claimed_address_refusal``, the guest-side declared)
    ``ip`` of domain ``name`` is not to be used (None when it is)."""
    mac, network = _interface_in(found, ip, networks)
    if not owners:
        owners.update(_owners(virsh))
    return refusal(name, ip, mac, networks.get(network or ''), leases.get(network or '', []),
                   owners, lambda bridge, address: _libvirt.read_neighbour(module, bridge, address))


def _claimed(module, virsh, name, claimed, known, networks, leases, owners):
    """The guest-side address ``claimed`` of domain ``name``, checked like an agent's: (guest, reason)."""
    try:
        ip = str(_forward.parse_address(claimed, 'address of %s' % name))
    except ValueError as exc:
        module.fail_json(msg='guest %s: %s; nothing was changed' % (name, exc))
    if name not in known:
        return None, 'no libvirt domain of that name on this host'
    domain = _libvirt.parse_domain_xml(virsh('dumpxml', name))
    refusal = _agent_refusal(module, virsh, name, domain, ip, networks, leases, owners, _pins.claimed_address_refusal)
    if refusal is not None:
        return None, '%s; the hypervisor side can declare its ip (expose_guests) if it is right' % refusal
    mac, network = _interface_in(domain, ip, networks)
    return {'name': name, 'ip': ip, 'source': 'claimed', 'mac': mac, 'network': network, 'pinned': False}, None


def _declared(module, virsh, name, declared, known, networks):
    """The guest with the address the inventory declares (its MAC and network when libvirt has the domain)."""
    try:
        ip = str(_forward.parse_address(declared, 'address of %s' % name))
    except ValueError as exc:
        module.fail_json(msg='guest %s: %s; nothing was changed' % (name, exc))
    guest = {'name': name, 'ip': ip, 'source': 'declared', 'mac': None, 'network': None, 'pinned': False}
    if name in known:
        domain = _libvirt.parse_domain_xml(virsh('dumpxml', name))
        guest['mac'], guest['network'] = _interface_in(domain, ip, networks)
    return guest


def _found(module, virsh, name, context):
    """(guest or None, why not, warnings) of a guest whose address libvirt reports (lease, agent).
    ``context``: (networks, leases, host_ips, owners)."""
    networks, leases, host_ips, owners = context
    found, problems = _libvirt.describe(module, virsh.path, virsh.uri, name, module.params['address_sources'],
                                        networks, host_ips)
    if not found['ipv4']:
        return None, ('the domain is %s and has no IPv4 address (no DHCP lease, no believable guest agent answer); '
                      'give its ip in the inventory or start it' % found['state']), problems
    refusals = []
    for ip in found['ipv4']:
        source = next((a.get('source') for i in found['interfaces'] for a in i.get('addresses', [])
                       if a['address'] == ip), 'lease')
        refusal = _agent_refusal(module, virsh, name, found, ip, networks, leases, owners) \
            if source == 'agent' else None
        if refusal is None:
            mac, network = _interface_in(found, ip, networks)
            return {'name': name, 'ip': ip, 'source': source, 'mac': mac, 'network': network, 'pinned': False}, \
                None, problems
        refusals.append(refusal)
    return None, '%s; give its ip in the inventory if it is right' % '; '.join(refusals), problems


def _resolve(module, virsh, networks, leases, host_ips):
    """Each named guest's address, MAC and network: (guests, unresolved, warnings)."""
    params = module.params
    known = set(_libvirt.list_domains(module, virsh.path, virsh.uri))
    guests, unresolved, warnings, owners = [], [], [], {}
    for name in dict.fromkeys(params['names']):
        declared = params['declared'].get(name)
        claimed = params['claimed'].get(name)
        if declared not in (None, '') and claimed not in (None, ''):
            module.fail_json(msg='guest %s is given an address both in declared (%s) and in claimed (%s): a guest has '
                                 'one; nothing was changed' % (name, declared, claimed))
        if claimed not in (None, ''):
            guest, reason = _claimed(module, virsh, name, claimed, known, networks, leases, owners)
        elif declared not in (None, ''):
            guest, reason = _declared(module, virsh, name, declared, known, networks), None
        elif name not in known:
            guest, reason = None, 'no libvirt domain of that name on this host'
        else:
            guest, reason, problems = _found(module, virsh, name, (networks, leases, host_ips, owners))
            warnings.extend(problems)
        if guest is None:
            unresolved.append({'name': name, 'reason': reason})
        else:
            guests.append(guest)
    return guests, unresolved, warnings


def _owners(virsh):
    """{mac: domain name} of every libvirt domain, to name the other guest in a conflict."""
    owners = {}
    for name in _libvirt.list_domains(virsh.module, virsh.path, virsh.uri):
        for iface in _libvirt.parse_domain_xml(virsh('dumpxml', name))['interfaces']:
            if iface.get('mac'):
                owners[iface['mac']] = name
    return owners


def _write_record(module, path, pins):
    if pins:
        _files.write_atomic(module, path, _pins.dump_record(pins), 0o600, make_dirs=True)
    elif os.path.exists(path):
        os.remove(path)


def _apply(module, virsh, networks, actions, record, path):
    """Make the actions so that the record on disk holds every pin that may be in libvirt at any moment:
    a pin is recorded before its net-update (a moved one keeps its old place in the record until the
    move is done) and forgotten only after its removal. When a net-update fails, the record is left
    holding what may be in libvirt (the failed pin too: libvirt may have made part of it)."""
    held, done = set(record), []
    for action, pin in actions:
        if action != 'delete' and pin not in held:
            held.add(pin)
            _write_record(module, path, held)
        flags = ['--live', '--config'] if networks[pin.network]['active'] else ['--config']
        command = {'add': 'add-last', 'modify': 'modify', 'delete': 'delete'}[action]
        try:
            virsh('net-update', pin.network, command, 'ip-dhcp-host', _pins.host_xml(pin), *flags)
        except _command.CommandError as exc:
            _write_record(module, path, held)
            module.fail_json(msg='libvirt: %s. Done before it: %s. Every pin that may be in libvirt is recorded in %s, '
                                 'so the next run moves or removes it' % (exc, '; '.join(done) or 'nothing', path),
                             cmd=exc.cmd, rc=exc.rc, stderr=exc.stderr, changes=done)
        if action == 'delete':
            held.discard(pin)
        elif action == 'modify':
            held = {p for p in held if p == pin or (p.network, p.mac) != (pin.network, pin.mac)}
        done.append(_describe(action, pin))


_DESCRIBE = {'add': '%s: pinned %s for %s in network %s', 'modify': '%s: pin moved to %s for %s in network %s',
             'delete': '%s: pin of %s for %s in network %s removed'}


def _describe(action, pin):
    return _DESCRIBE[action] % (pin.guest or 'a guest', pin.ip, pin.mac, pin.network)


def run(module):
    params = module.params
    path = params['record_path']
    try:
        with open(path) as handle:
            record = _pins.load_record(handle.read())
    except FileNotFoundError:
        record = []
    except (_pins.RecordError, UnicodeDecodeError, RecursionError, OSError) as exc:
        module.fail_json(msg='the record of the DHCP pins kvmnet.nat made, %s, is corrupt: %s; nothing was changed. '
                             'Repair it (it holds %s) or, if it is beyond repair, move it away: the reservations it '
                             'listed are then left alone as someone else\'s (remove them with virsh net-update NETWORK '
                             'delete ip-dhcp-host \'<host mac=... ip=.../>\' --live --config)'
                         % (path, exc, _pins.RECORD_FORMAT))
    virsh = _Virsh(module)
    networks, leases = _libvirt.read_networks(module, virsh.path, virsh.uri)
    present = params['state'] == 'present'
    guests, unresolved, warnings = [], [], []
    if present:
        host_ips = set()
        if 'agent' in params['address_sources']:
            host_ips = {iface.ip for iface, _dev in _routes.host_interfaces(module)}
        guests, unresolved, warnings = _resolve(module, virsh, networks, leases, host_ips)
        conflicts = _pins.check(guests, networks, leases, {}, record)
        if conflicts:
            conflicts = _pins.check(guests, networks, leases, _owners(virsh), record)
            module.fail_json(msg='addresses that would reach the wrong guest, nothing was changed: %s'
                             % '; '.join(conflicts), errors=conflicts, guests=guests)
    actions, pins, notes = _pins.plan(guests, networks, record, present and params['pin'])
    pinned = {(p.network, p.mac) for p in pins}
    for guest in guests:
        reservations = networks.get(guest['network'] or '', {}).get('reservations', [])
        guest['pinned'] = (guest['network'], guest['mac']) in pinned or any(
            r['mac'] == guest['mac'] and r['ip'] == guest['ip'] for r in reservations)
    changed = bool(actions) or sorted(pins) != sorted(record)
    if changed and not module.check_mode:
        _apply(module, virsh, networks, actions, record, path)
        _write_record(module, path, pins)
    for warning in warnings + notes:
        module.warn(warning)
    result = dict(changed=changed, guests=guests, unresolved=unresolved, pins=[p.as_dict() for p in pins],
                  changes=[_describe(action, pin) for action, pin in actions],
                  record_changed=sorted(pins) != sorted(record))
    if module._diff:
        result['diff'] = dict(before=_pins.dump_record(record), after=_pins.dump_record(pins),
                              before_header=path, after_header=path)
    module.exit_json(**result)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            names=dict(type='list', elements='str', default=[]),
            declared=dict(type='dict', default={}),
            claimed=dict(type='dict', default={}),
            pin=dict(type='bool', default=True),
            state=dict(type='str', choices=['present', 'absent'], default='present'),
            record_path=dict(type='path', default='/var/lib/kvmnet-nat/pins.json'),
            uri=dict(type='str', default='qemu:///system'),
            address_sources=dict(type='list', elements='str', choices=list(_libvirt.ADDRESS_SOURCES),
                                 default=list(_libvirt.ADDRESS_SOURCES)),
        ),
        supports_check_mode=True,
    )
    try:
        run(module)
    except _command.CommandError as exc:
        module.fail_json(msg='libvirt: %s' % exc, cmd=exc.cmd, rc=exc.rc, stderr=exc.stderr)
    except _routes.RouteError as exc:
        module.fail_json(msg='%s (needed to check guest agent addresses); nothing was changed' % exc)


if __name__ == '__main__':
    main()
