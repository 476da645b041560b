# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Reading libvirt domains through virsh: PRIVATE to this collection, no stable API.

The parsers are pure (unit-tested on recorded virsh output); ``describe`` runs the read-only
virsh commands through _command.run.
"""

from __future__ import annotations

import ipaddress
import json
import xml.etree.ElementTree as ET

from ansible_collections.kvmnet.nat.plugins.module_utils import _forward
from ansible_collections.kvmnet.nat.plugins.module_utils._command import CommandError, run

ADDRESS_SOURCES = ('lease', 'agent')


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


def parse_network_xml(text):
    """Name, bridge, the host's addresses on the network (``ip_interface``, e.g. 192.168.122.1/24),
    whether it serves DHCP, and its DHCP host reservations, from ``virsh net-dumpxml``."""
    root = ET.fromstring(text)
    bridge = root.find('bridge')
    result = {'name': root.findtext('name'), 'bridge': bridge.get('name') if bridge is not None else None,
              'ips': [], 'dhcp': False, 'reservations': [], 'routers': parse_routers(root)}
    for ip in root.findall('ip'):
        address, prefix, netmask = ip.get('address'), ip.get('prefix'), ip.get('netmask')
        try:
            iface = ipaddress.ip_interface('%s/%s' % (address, prefix or netmask or ('24' if ':' not in address else '64')))
        except (TypeError, ValueError):
            continue
        result['ips'].append(iface)
        dhcp = ip.find('dhcp')
        if dhcp is None:
            continue
        result['dhcp'] = result['dhcp'] or dhcp.find('range') is not None or dhcp.find('host') is not None
        for host in dhcp.findall('host'):
            result['reservations'].append({'mac': (host.get('mac') or '').lower() or None, 'name': host.get('name'),
                                           'ip': host.get('ip'), 'family': 'ipv%d' % iface.version})
    return result


DNSMASQ_NS = '{http://libvirt.org/schemas/network/dnsmasq/1.0}'


def parse_routers(root):
    """{IP version: gateway} that a network's dnsmasq options hand out instead of the host's own address
    (``dhcp-option=option:router,X`` or ``dhcp-option=3,X``); '' when they hand out none."""
    routers = {}
    for option in root.iter(DNSMASQ_NS + 'option'):
        value = option.get('value') or ''
        if not value.startswith('dhcp-option='):
            continue
        words = [w.strip() for w in value[len('dhcp-option='):].split(',') if not w.startswith(('tag:', 'net:'))]
        if not words or words[0] not in ('3', 'option:router'):
            continue
        gateway = words[1] if len(words) > 1 else ''
        try:
            routers[ipaddress.ip_address(gateway).version if gateway else 4] = gateway
        except ValueError:
            continue
    return routers


def parse_leases(text):
    """Rows of ``virsh net-dhcp-leases NETWORK``: mac, address, hostname (None for ``-``)."""
    rows = []
    for line in text.splitlines():
        words = line.split()
        if len(words) < 6 or words[0] == 'Expiry' or set(line.strip()) == {'-'}:
            continue
        mac, cidr, hostname = words[2].lower(), words[4], words[5]
        try:
            ip = ipaddress.ip_interface(cidr).ip
        except ValueError:
            continue
        rows.append({'mac': mac, 'address': str(ip), 'hostname': None if hostname == '-' else hostname})
    return rows


def agent_address_problem(interface, address, networks, host_ips):
    """Why an address the guest agent reports (the guest controls it) is not to be believed, or None.

    Believed only inside the libvirt network of the interface it is reported on, and never when it
    is the host's own address there, another address of the host, or the network's network or
    broadcast address.
    """
    ip = ipaddress.ip_address(address)
    network = networks.get(interface.get('network')) if interface and interface.get('network') else None
    if network is None:
        return 'not on a libvirt network of this host, so nothing can vouch for it'
    if ip in host_ips:
        return 'an address of this host'
    for iface in network['ips']:
        if iface.version == ip.version and ip in iface.network:
            problem = _forward.target_problem(ip, iface.network)
            return problem if problem else None
    return 'outside network %s (%s)' % (network['name'], ', '.join(str(i.network) for i in network['ips']) or 'no addresses')


def parse_neighbour(text, address):
    """What ``ip -j neigh show dev BRIDGE to ADDRESS`` says answers for ``address``:
    {'mac': its lladdr (None when there is none), 'state': e.g. 'REACHABLE', 'problem': why no MAC}."""
    try:
        entries = json.loads(text or '[]')
    except ValueError as exc:
        return {'mac': None, 'state': None, 'problem': 'ip -j neigh printed no JSON (%s)' % exc}
    wanted = ipaddress.ip_address(address)
    for entry in entries if isinstance(entries, list) else []:
        try:
            if not isinstance(entry, dict) or ipaddress.ip_address(entry.get('dst') or '') != wanted:
                continue
        except ValueError:
            continue
        state = '/'.join(entry.get('state') or []) or None
        mac = str(entry.get('lladdr') or '').lower() or None
        if mac is None or state in ('FAILED', 'INCOMPLETE'):
            return {'mac': None, 'state': state, 'problem': 'its neighbour entry is %s, nothing answered' % (state or 'empty')}
        return {'mac': mac, 'state': state, 'problem': None}
    return {'mac': None, 'state': None, 'problem': 'no neighbour entry for it'}


def read_neighbour(module, bridge, address):
    """parse_neighbour of ``address`` on ``bridge``, after asking for it once.

    One ``ping -c 1 -W 1 -I BRIDGE ADDRESS`` (iputils or busybox; its answer does not matter) makes the
    kernel resolve the address on the bridge, so the entry read afterwards is the MAC this host would
    send a forwarded packet to. Without ping, the table is read as it is; without ip (iproute2), the
    problem says so.
    """
    ip_cmd = module.get_bin_path('ip')
    if not ip_cmd:
        return {'mac': None, 'state': None, 'problem': 'the ip command (iproute2) is missing, needed to read the '
                                                       'neighbour table'}
    ping = module.get_bin_path('ping')
    if ping:
        run(module, [ping, '-n', '-q', '-c', '1', '-W', '1', '-I', bridge, address], check=False)
    rc, out, err = run(module, [ip_cmd, '-j', 'neigh', 'show', 'dev', bridge, 'to', address], check=False)
    if rc != 0:
        found = {'mac': None, 'state': None, 'problem': 'ip -j neigh show dev %s to %s failed (rc=%s): %s'
                 % (bridge, address, rc, (err or out).strip())}
    else:
        found = parse_neighbour(out, address)
    if not found['mac'] and not ping:
        found['problem'] += '; ping (iputils) is missing, so the host could not ask who has it'
    return found


def merge(domain, state, addresses):
    """One guest record: interfaces with their addresses, and the usable addresses per family."""
    guest = dict(domain, state=state, ipv4=[], ipv6=[])
    for iface in guest['interfaces']:
        iface['addresses'] = [a for a in addresses if a['mac'] == iface['mac']]
        for addr in iface['addresses']:
            ip = ipaddress.ip_address(addr['address'])
            if ip.is_link_local or ip.is_loopback or addr.get('rejected'):
                continue
            key = 'ipv4' if ip.version == 4 else 'ipv6'
            if addr['address'] not in guest[key]:
                guest[key].append(addr['address'])
    return guest


def _virsh(module, virsh, uri, *args):
    return run(module, [virsh, '--connect', uri] + list(args))[1]


def list_domains(module, virsh, uri):
    out = _virsh(module, virsh, uri, 'list', '--all', '--name')
    return [line.strip() for line in out.splitlines() if line.strip()]


def read_network(module, virsh, uri, name):
    """parse_network_xml of one libvirt network, or None when libvirt does not know it."""
    try:
        return parse_network_xml(_virsh(module, virsh, uri, 'net-dumpxml', name))
    except CommandError:
        return None
    except ET.ParseError:
        return None


def read_leases(module, virsh, uri, name):
    """parse_leases of one libvirt network; CommandError when virsh fails."""
    return parse_leases(_virsh(module, virsh, uri, 'net-dhcp-leases', name))


def read_networks(module, virsh, uri):
    """{name: read_network, with 'active'} and {name: leases (none when inactive)} of every libvirt network."""
    networks, leases = {}, {}
    active = set(line.strip() for line in _virsh(module, virsh, uri, 'net-list', '--name').splitlines() if line.strip())
    for name in (line.strip() for line in _virsh(module, virsh, uri, 'net-list', '--all', '--name').splitlines()):
        if not name:
            continue
        parsed = read_network(module, virsh, uri, name)
        if parsed is None:
            continue
        parsed['active'] = name in active
        networks[name] = parsed
        leases[name] = read_leases(module, virsh, uri, name) if name in active else []
    return networks, leases


def read_guests(module, virsh, uri, names, host_ips):
    """What the doctor needs of the named domains: ({'domains', 'networks', 'leases'}, warnings).

    Domains libvirt does not know are left out; a domain that cannot be read is a warning. Only the
    networks the domains are on are read, and their leases (none when virsh cannot list them).
    """
    known = set(list_domains(module, virsh, uri))
    networks, domains, warnings = {}, {}, []
    for name in sorted(set(names) & known):
        try:
            domains[name], notes = describe(module, virsh, uri, name, ADDRESS_SOURCES, networks, host_ips)
        except (CommandError, ET.ParseError) as exc:
            warnings.append('guest %s: %s' % (name, exc))
            continue
        warnings.extend(notes)
        for iface in domains[name]['interfaces']:
            if iface.get('network') and iface['network'] not in networks:
                networks[iface['network']] = read_network(module, virsh, uri, iface['network'])
    leases = {}
    for name, network in networks.items():
        if network is not None:
            try:
                leases[name] = read_leases(module, virsh, uri, name)
            except CommandError:
                leases[name] = []
    return {'domains': domains, 'networks': {k: v for k, v in networks.items() if v}, 'leases': leases}, warnings


def describe(module, virsh, uri, name, sources, networks, host_ips):
    """Everything guest_info returns about one domain; address lookups that fail become warnings.

    Sources are tried in order until one gives an address. libvirt's lease comes from its own DHCP
    server; an address from the guest agent is the guest's word, so each one is kept only when
    agent_address_problem finds nothing (it is then marked, and rejected ones are reported).
    ``networks``: a cache of read_network results by network name, filled here as needed.
    """
    domain = parse_domain_xml(_virsh(module, virsh, uri, 'dumpxml', name))
    state = _virsh(module, virsh, uri, 'domstate', name).strip()
    addresses, warnings = [], []
    if state == 'running':
        for source in sources:
            try:
                rows = parse_domifaddr(_virsh(module, virsh, uri, 'domifaddr', name, '--full', '--source', source))
            except CommandError as exc:
                warnings.append('guest %s: no addresses from source %s: %s' % (name, source, exc))
                continue
            for row in rows:
                row['source'] = source
                if source == 'agent':
                    interface = next((i for i in domain['interfaces'] if i['mac'] == row['mac']), None)
                    if interface and interface.get('network') and interface['network'] not in networks:
                        networks[interface['network']] = read_network(module, virsh, uri, interface['network'])
                    problem = agent_address_problem(interface, row['address'], networks, host_ips)
                    if problem:
                        row['rejected'] = problem
                        warnings.append('guest %s: ignored %s reported by the guest agent on %s: %s'
                                        % (name, row['address'], row['target'], problem))
            addresses = rows
            if any(not row.get('rejected') for row in rows):
                break
    return merge(domain, state, addresses), warnings
