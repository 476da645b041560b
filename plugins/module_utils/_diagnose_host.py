# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The doctor's checks that do not depend on the firewall backend: PRIVATE to this collection, no stable API.

forwarding (the global and per-interface forwarding sysctls, rp_filter, br_netfilter), listener (a host process on the public port), guest
(what libvirt says about it, and whether it answers) and route (the guest's gateway). Pure Python, no
I/O: each reads the View the doctor filled from the host reader (_host); the checks a backend supplies
(layout, jumps, rules, saved, counters) are in _doctor.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ansible_collections.kvmnet.nat.plugins.module_utils import _listeners
from ansible_collections.kvmnet.nat.plugins.module_utils._forward import address_text

RUN_EXPOSE = 'run the kvmnet.nat.expose playbook'


@dataclass
class Check:
    ok: bool | None
    detail: str
    causes: list = field(default_factory=list)     # [(cause, fix)]
    doubts: list = field(default_factory=list)     # [(cause, fix)]: what the doctor could not tell (ok is None)


def _fail(detail, cause, fix):
    return Check(False, detail, [(cause, fix)])


# ---------------------------------------------------------------- where the packets go


def _iface_of(view, ip):
    for iface, dev in view.interfaces:
        if iface.ip == ip:
            return dev
    return None


def public_iface(fwd, view):
    if fwd.in_interface:
        return fwd.in_interface.rstrip('+') if fwd.in_interface.endswith('+') else fwd.in_interface
    if fwd.public_ip is not None:
        return _iface_of(view, fwd.public_ip) or view.default_dev.get(fwd.family)
    return view.default_dev.get(fwd.family)


def guest_iface(fwd, view):
    """The device this host reaches the guest through (its bridge)."""
    dev = view.routes.get(address_text(fwd.guest_ip))
    if dev:
        return dev
    for iface, name in view.interfaces:
        if iface.version == fwd.family and fwd.guest_ip in iface.network and iface.network.prefixlen < iface.max_prefixlen:
            return name
    return None


# ---------------------------------------------------------------- checks


def check_forwarding(fwd, view):
    key = 'ipv4_forward' if fwd.family == 4 else 'ipv6_forward'
    name = 'net.ipv4.ip_forward' if fwd.family == 4 else 'net.ipv6.conf.all.forwarding'
    value = view.sysctl.get(key)
    if value != '1':
        return _fail('%s = %s' % (name, value), '%s is %s: this host routes no packet between its interfaces, so '
                     'nothing reaches the guest.' % (name, value),
                     'sysctl -w %s=1 (kvmnet.nat.expose sets it and keeps it in /etc/sysctl.d/60-kvmnet-nat.conf).' % name)
    details = ['%s = 1' % name]
    ended = _interface_forwarding(fwd, view, details)
    if ended is not None:
        return ended
    if fwd.family == 4:
        iface = public_iface(fwd, view)
        rp = view.sysctl.get('rp_filter', {})
        strict = max(rp.get('all', 0), rp.get(iface, 0)) == 1 if iface else False
        details.append('rp_filter on %s: %s' % (iface or '?', 'strict' if strict else 'not strict'))
        if strict:
            wrong = [(src, dev) for src, dev in _source_routes(fwd, view) if dev and dev != iface]
            if wrong:
                src, dev = wrong[0]
                return _fail('; '.join(details), 'Clients (%s) arrive on %s but the route back to them leaves through '
                             '%s: with rp_filter strict (1) the kernel drops their packets.' % (src, iface, dev),
                             'sysctl -w net.ipv4.conf.%s.rp_filter=2 (loose), or route %s through %s.' % (iface, src, iface))
    bridge = view.sysctl.get('bridge_nf')
    details.append('br_netfilter: %s' % ('not loaded' if bridge is None else 'bridge-nf-call-iptables = %s' % bridge))
    return Check(True, '; '.join(details))


def _interface_forwarding(fwd, view, details):
    """net.ipv4.conf.<iface>.forwarding of the interface the clients' packets arrive on and of the one the
    guest's replies arrive on: IPv4 forwards a packet only if its in-interface forwards (ip_forward = 1 sets
    every interface, but each can be turned off again). IPv6 forwards by net.ipv6.conf.all.forwarding alone
    (ip6_forward reads no per-interface setting): there a 0 on one interface is only reported."""
    values = view.sysctl.get('forwarding%d' % fwd.family) or {}
    ends = (('the clients\' packets arrive on it', public_iface(fwd, view)),
            ('the guest\'s replies arrive on it', guest_iface(fwd, view)))
    for role, iface in ends:
        if not iface or iface not in values:
            continue
        name = 'net.ipv%d.conf.%s.forwarding' % (fwd.family, iface)
        value = values[iface]
        if value == '1':
            details.append('%s = 1' % name)
            continue
        if fwd.family == 6:
            details.append('%s = %s (IPv6 forwards by net.ipv6.conf.all.forwarding)' % (name, value))
            continue
        return _fail('; '.join(details + ['%s = %s' % (name, value)]),
                     '%s is %s (%s): the kernel forwards no packet that arrives on %s, though net.ipv4.ip_forward '
                     'is 1, so the connection never completes.' % (name, value, role, iface),
                     'sysctl -w %s=1, and remove the setting that turns it off (grep -r forwarding /etc/sysctl.conf '
                     '/etc/sysctl.d).' % name)
    return None


def _source_routes(fwd, view):
    """(source, device of the route back to it) for the forward's sources, or any client (the default route)."""
    if fwd.sources:
        return [(str(net), view.routes.get(address_text(net.network_address))) for net in fwd.sources]
    return [('any source', view.default_dev.get(fwd.family))]


def check_listener(fwd, view):
    hits = [item for item in view.listeners if _listeners.covers(item, fwd)]
    if not hits:
        return Check(True, 'no host process listens on %s/%s' % (fwd.proto, fwd.host_ports))
    names = ', '.join(sorted(set(str(h) for h in hits)))
    if fwd.allow_in_use:
        return Check(True, '%s, allowed (allow_in_use)' % names)
    return _fail(names, 'A host process listens on the public port (%s): outside clients reach %s through the DNAT, '
                 'and that process no longer sees them; clients the DNAT does not take reach it instead.' % (names, fwd.guest),
                 'Move the service to another port or address, change the forward\'s host port, or declare '
                 'allow_in_use: true if this is intended.')


def _guest_record(fwd, view):
    domains = view.libvirt.get('domains', {})
    return domains.get(fwd.guest)


def _leases_of(view, ip):
    return [(network, row) for network, rows in view.libvirt.get('leases', {}).items() for row in rows
            if row['address'] == address_text(ip)]


def _guest_state(fwd, view):
    """(Check or None, details) of what libvirt says about the guest; a Check ends the guest check."""
    if view.libvirt is None:
        return None, ['libvirt not read (%s)' % (view.libvirt_error or 'virsh not installed')]
    guest = _guest_record(fwd, view)
    if guest is None:
        return _fail('no domain %s' % fwd.guest, 'libvirt has no domain named %s.' % fwd.guest,
                     'Check the name in the inventory against virsh list --all.'), []
    if guest['state'] != 'running':
        return _fail('%s is %s' % (fwd.guest, guest['state']), '%s is %s.' % (fwd.guest, guest['state']),
                     'virsh start %s.' % fwd.guest), []
    macs = {iface['mac'] for iface in guest['interfaces']}
    others = [(net, row) for net, row in _leases_of(view, fwd.guest_ip) if row['mac'] not in macs]
    if others:
        net, row = others[0]
        return _fail('%s leased to %s' % (fwd.guest_ip, row['mac']),
                     '%s is leased to another machine (%s%s on network %s): the forward delivers to it, not to %s.'
                     % (fwd.guest_ip, row['mac'], ', %s' % row['hostname'] if row.get('hostname') else '', net, fwd.guest),
                     '%s: it pins each guest\'s address in libvirt\'s DHCP.' % RUN_EXPOSE.capitalize()), []
    key = 'ipv4' if fwd.family == 4 else 'ipv6'
    now = guest.get(key) or []
    if now and address_text(fwd.guest_ip) not in now:
        source = next((a.get('source', 'lease') for i in guest['interfaces'] for a in i.get('addresses', [])
                       if a['address'] == now[0]), 'lease')
        return _fail('%s has %s' % (fwd.guest, ', '.join(now)),
                     '%s\'s address is now %s (%s), but the rules send %s/%s to %s.'
                     % (fwd.guest, ', '.join(now), source, fwd.proto, fwd.host_ports, fwd.guest_ip),
                     '%s (it pins the address); if the guest set the address itself, fix its network configuration.'
                     % RUN_EXPOSE.capitalize()), []
    return None, ['%s running at %s' % (fwd.guest, ', '.join(now) if now else '%s (no lease or agent address to compare)'
                                        % fwd.guest_ip)]


def check_guest(fwd, view):
    ended, details = _guest_state(fwd, view)
    if ended is not None:
        return ended
    answer = view.answers.get((address_text(fwd.guest_ip), fwd.proto, fwd.guest_ports.first))
    target = '%s %s/%d' % (address_text(fwd.guest_ip), fwd.proto, fwd.guest_ports.first)
    if answer is None:
        details.append('%s: not checked (UDP: declare send/expect to check)' % target if fwd.proto == 'udp'
                       else '%s: not checked' % target)
        return Check(None if view.libvirt is None else True, '; '.join(details))
    ok, text = answer
    if ok:
        details.append('%s answers from this host' % target)
        return Check(True, '; '.join(details))
    details.append('%s: %s' % (target, text))
    if text == 'refused':
        cause = ('%s refuses %s/%d: no service listens there (or its firewall rejects).'
                 % (fwd.guest, fwd.proto, fwd.guest_ports.first))
        fix = 'Start the service on %s, or correct the guest port of the forward.' % fwd.guest
    else:
        cause = '%s at %s does not answer %s/%d from this host (%s): it is down, its firewall drops, or the address ' \
                'is wrong.' % (fwd.guest, address_text(fwd.guest_ip), fwd.proto, fwd.guest_ports.first, text)
        fix = 'Check the guest (virsh console %s) and its firewall.' % fwd.guest
    return Check(False, '; '.join(details), [(cause, fix)])


def check_route(fwd, view):
    if fwd.masquerade == 'always':
        return Check(True, 'masquerade: always; replies come back through this host whatever the guest\'s gateway')
    if view.libvirt is None:
        return Check(None, 'libvirt not read')
    guest = _guest_record(fwd, view)
    if guest is None:
        return Check(None, 'no domain %s' % fwd.guest)
    networks = view.libvirt.get('networks', {})
    for iface in guest['interfaces']:
        network = networks.get(iface.get('network') or '')
        if network is None:
            continue
        for ip in network['ips']:
            if ip.version != fwd.family or fwd.guest_ip not in ip.network:
                continue
            gateway = network.get('routers', {}).get(ip.version, address_text(ip.ip))
            if not gateway:
                return _fail('network %s hands out no gateway' % network['name'],
                             'Network %s hands out no default gateway: %s cannot answer clients outside %s.'
                             % (network['name'], fwd.guest, ip.network),
                             'masquerade: always for %s, then %s.' % (fwd.guest, RUN_EXPOSE))
            if gateway != address_text(ip.ip):
                return _fail('gateway %s, not this host (%s)' % (gateway, ip.ip),
                             '%s\'s default gateway is %s (libvirt network %s hands it out), not this host (%s): replies '
                             'to outside clients go there and never come back.' % (fwd.guest, gateway, network['name'], ip.ip),
                             'masquerade: always for %s (it then sees connections from %s), then %s.'
                             % (fwd.guest, ip.ip, RUN_EXPOSE))
            return Check(True, 'gateway %s (this host, network %s)' % (gateway, network['name']))
    return Check(None, 'libvirt does not know %s\'s gateway (not on a libvirt network with an address of this host)'
                 % fwd.guest)
