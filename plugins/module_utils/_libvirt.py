# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Reading libvirt domains through virsh: PRIVATE to this collection, no stable API.

The parsers are pure (unit-tested on recorded virsh output); ``describe`` runs the read-only
virsh commands through ``module.run_command`` as argument lists with ``LANG=C``.
"""

from __future__ import annotations

import ipaddress
import xml.etree.ElementTree as ET

ENVIRON = {'LANG': 'C', 'LC_ALL': 'C', 'LC_MESSAGES': 'C'}
ADDRESS_SOURCES = ('lease', 'agent')


class VirshError(Exception):
    def __init__(self, cmd, rc, stderr):
        self.cmd = cmd
        self.rc = rc
        self.stderr = (stderr or '').strip()
        super().__init__('%s failed (rc=%s): %s' % (' '.join(cmd), rc, self.stderr or '(no stderr)'))


def parse_domain_xml(text):
    """Name, UUID and network interfaces of a domain from ``virsh dumpxml``."""
    root = ET.fromstring(text)
    interfaces = []
    for iface in root.findall('./devices/interface'):
        mac = iface.find('mac')
        source = iface.find('source')
        target = iface.find('target')
        model = iface.find('model')
        interfaces.append({
            'type': iface.get('type'),
            'mac': mac.get('address').lower() if mac is not None and mac.get('address') else None,
            'network': source.get('network') if source is not None else None,
            'bridge': source.get('bridge') if source is not None else None,
            'target': target.get('dev') if target is not None else None,
            'model': model.get('type') if model is not None else None,
        })
    return {'name': root.findtext('name'), 'uuid': root.findtext('uuid'), 'interfaces': interfaces}


def parse_domifaddr(text):
    """Rows of ``virsh domifaddr`` (with or without --full) as dicts.

    Without --full, further addresses of the same interface repeat name and MAC as ``-``.
    """
    rows = []
    last_name = last_mac = None
    for line in text.splitlines():
        words = line.split()
        if len(words) != 4 or words[0] == 'Name' or set(line.strip()) == {'-'}:
            continue
        name, mac, family, cidr = words
        name = last_name if name == '-' else name
        mac = last_mac if mac == '-' else mac.lower()
        last_name, last_mac = name, mac
        try:
            iface = ipaddress.ip_interface(cidr)
        except ValueError:
            continue
        rows.append({'target': name, 'mac': mac, 'family': family, 'address': str(iface.ip),
                     'prefix': iface.network.prefixlen})
    return rows


def merge(domain, state, addresses):
    """One guest record: interfaces with their addresses, and the usable addresses per family."""
    guest = dict(domain, state=state, ipv4=[], ipv6=[])
    for iface in guest['interfaces']:
        iface['addresses'] = [a for a in addresses if a['mac'] == iface['mac']]
        for addr in iface['addresses']:
            ip = ipaddress.ip_address(addr['address'])
            if ip.is_link_local or ip.is_loopback:
                continue
            key = 'ipv4' if ip.version == 4 else 'ipv6'
            if addr['address'] not in guest[key]:
                guest[key].append(addr['address'])
    return guest


def _virsh(module, virsh, uri, *args):
    cmd = [virsh, '--connect', uri] + list(args)
    rc, out, err = module.run_command(cmd, environ_update=ENVIRON)
    if rc != 0:
        raise VirshError(cmd, rc, err or out)
    return out


def list_domains(module, virsh, uri):
    out = _virsh(module, virsh, uri, 'list', '--all', '--name')
    return [line.strip() for line in out.splitlines() if line.strip()]


def describe(module, virsh, uri, name, sources):
    """Everything guest_info returns about one domain; address lookups that fail become warnings."""
    domain = parse_domain_xml(_virsh(module, virsh, uri, 'dumpxml', name))
    state = _virsh(module, virsh, uri, 'domstate', name).strip()
    addresses, warnings = [], []
    if state == 'running':
        for source in sources:
            try:
                addresses = parse_domifaddr(_virsh(module, virsh, uri, 'domifaddr', name, '--full',
                                                   '--source', source))
            except VirshError as exc:
                warnings.append('guest %s: no addresses from source %s: %s' % (name, source, exc))
                continue
            if addresses:
                break
    return merge(domain, state, addresses), warnings
