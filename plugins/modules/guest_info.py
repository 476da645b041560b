#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: guest_info
short_description: Read libvirt guests, their interfaces and addresses
version_added: 1.0.0
description:
  - Lists libvirt domains with their state, the MAC address, network or bridge of every interface,
    and their IPv4 and IPv6 addresses from the libvirt network's DHCP leases or the guest agent.
  - Read-only; uses C(virsh). Guests that are asked for by name but do not exist are returned in
    RV(missing), so the caller decides whether that is an error.
author:
  - kvmnet.nat maintainers (!UNKNOWN)
attributes:
  check_mode:
    support: full
    description: The module only reads.
  diff_mode:
    support: none
    description: Nothing changes, so there is nothing to diff.
  platform:
    platforms: posix
    support: full
    description: Hosts with libvirt and C(virsh).
options:
  names:
    description:
      - Domains to describe. All domains when empty.
    type: list
    elements: str
    default: []
  uri:
    description:
      - libvirt connection URI.
    type: str
    default: qemu:///system
  address_sources:
    description:
      - Where addresses come from, tried in this order until one gives an address.
      - V(lease) reads the DHCP leases of libvirt's network (libvirt's own DHCP server handed them out);
        V(agent) asks the QEMU guest agent, which the guest controls.
      - An address from the agent is used only when it lies inside the libvirt network of the interface it
        is reported on and is neither an address of this host (such as the bridge's own) nor that
        network's network or broadcast address; others are returned with RV(guests[].interfaces[].addresses[].rejected)
        set, left out of RV(guests[].ipv4) and RV(guests[].ipv6), and reported in a warning.
    type: list
    elements: str
    choices: [lease, agent]
    default: [lease, agent]
notes:
  - Guests on a host bridge rather than a libvirt network have no lease, and an agent address cannot be
    checked against a network there, so they get no address from this module; declare their address.
  - Only running guests have addresses. libvirt may keep stale leases after a restart; an address
    from a lease is what libvirt's DHCP server handed out, not proof that the guest still uses it.
"""

EXAMPLES = r"""
- name: Describe two guests
  kvmnet.nat.guest_info:
    names: [web01, dns01]
  register: guests

- name: Fail if a guest has no IPv4 address
  ansible.builtin.assert:
    that: guests.guests | selectattr('ipv4', 'equalto', []) | list | length == 0
"""

RETURN = r"""
guests:
  description: One entry per domain found.
  returned: always
  type: list
  elements: dict
  sample:
    - name: web01
      uuid: 6f0d3c4e-8b53-4a7f-9a57-2d2c8f1a2b10
      state: running
      ipv4: [192.168.122.10]
      ipv6: []
      interfaces:
        - {type: network, mac: "52:54:00:00:00:10", network: default, bridge: null, target: vnet0,
           model: virtio, addresses: [{target: vnet0, mac: "52:54:00:00:00:10", family: ipv4,
           address: 192.168.122.10, prefix: 24, source: lease}]}
  contains:
    ipv4:
      description: The usable IPv4 addresses, lease before agent; agent addresses only when believed.
      type: list
      elements: str
    ipv6:
      description: The usable IPv6 addresses (link-local ones left out).
      type: list
      elements: str
    interfaces:
      description: The domain's interfaces with their addresses.
      type: list
      elements: dict
      contains:
        addresses:
          description: What the address source reported for this interface.
          type: list
          elements: dict
          contains:
            source:
              description: V(lease) or V(agent).
              type: str
            rejected:
              description: Why an agent address was not believed (absent when it was).
              type: str
missing:
  description: Names asked for that libvirt does not know.
  returned: always
  type: list
  elements: str
  sample: [web02]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kvmnet.nat.plugins.module_utils import _command
from ansible_collections.kvmnet.nat.plugins.module_utils import _libvirt
from ansible_collections.kvmnet.nat.plugins.module_utils import _routes


def main():
    module = AnsibleModule(
        argument_spec=dict(
            names=dict(type='list', elements='str', default=[]),
            uri=dict(type='str', default='qemu:///system'),
            address_sources=dict(type='list', elements='str', choices=list(_libvirt.ADDRESS_SOURCES),
                                 default=list(_libvirt.ADDRESS_SOURCES)),
        ),
        supports_check_mode=True,
    )
    virsh = module.get_bin_path('virsh', required=True)
    uri = module.params['uri']
    sources = module.params['address_sources']
    host_ips = set()
    if 'agent' in sources:
        try:
            host_ips = {iface.ip for iface, _dev in _routes.host_interfaces(module)}
        except _routes.RouteError as exc:
            module.fail_json(msg='%s (needed to check guest agent addresses)' % exc)
    networks = {}
    try:
        known = _libvirt.list_domains(module, virsh, uri)
        wanted = module.params['names'] or known
        guests = []
        for name in wanted:
            if name not in known:
                continue
            guest, warnings = _libvirt.describe(module, virsh, uri, name, sources, networks, host_ips)
            for warning in warnings:
                module.warn(warning)
            guests.append(guest)
    except _command.CommandError as exc:
        module.fail_json(msg='reading libvirt guests: %s' % exc, cmd=exc.cmd, rc=exc.rc, stderr=exc.stderr)
    module.exit_json(changed=False, guests=guests, missing=[n for n in wanted if n not in known])


if __name__ == '__main__':
    main()
