# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The host's own addresses and connected networks, read with ``ip -j``: PRIVATE to this collection.

The parsers are pure (unit-tested on recorded ``ip -j`` output); the readers run ``ip`` through
_command.run.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json

from ansible_collections.kvmnet.nat.plugins.module_utils._command import run


class RouteError(Exception):
    pass


def parse_addresses(text):
    """``ip -j addr show`` -> [(ipaddress.ip_interface, device)], every address of every device."""
    try:
        links = json.loads(text or '[]')
    except ValueError as exc:
        raise RouteError('ip -j addr show printed no JSON: %s' % exc)
    result = []
    for link in links if isinstance(links, list) else []:
        for info in link.get('addr_info') or []:
            try:
                iface = ipaddress.ip_interface('%s/%s' % (info['local'], info['prefixlen']))
            except (KeyError, TypeError, ValueError):
                continue
            result.append((iface, str(link.get('ifname', '?'))))
    return result


def host_interfaces(module):
    """Every address of this host with its prefix and device; an error when ``ip`` cannot tell."""
    ip_cmd = module.get_bin_path('ip')
    if not ip_cmd:
        raise RouteError('cannot read this host\'s addresses: the ip command (iproute2) is missing')
    rc, out, err = run(module, [ip_cmd, '-j', 'addr', 'show'], check=False)
    if rc != 0:
        raise RouteError('ip -j addr show failed (rc=%s): %s' % (rc, (err or out).strip()))
    return parse_addresses(out)


def connected_network(module, ip, interfaces):
    """The directly connected network holding ``ip`` (e.g. libvirt's 192.168.122.0/24), or None.

    ``ip route get`` names the device the kernel would use; the network is that device's address
    whose prefix contains ``ip`` (``interfaces`` as host_interfaces returns them).
    """
    ip_cmd = module.get_bin_path('ip')
    if not ip_cmd:
        return None
    rc, out, _err = run(module, [ip_cmd, '-j', '-%d' % ip.version, 'route', 'get', str(ip)], check=False)
    if rc != 0:
        return None
    try:
        routes = json.loads(out or '[]')
    except ValueError:
        return None
    if not routes or not isinstance(routes[0], dict) or routes[0].get('gateway') or not routes[0].get('dev'):
        return None
    for iface, dev in interfaces:
        if dev == routes[0]['dev'] and iface.version == ip.version and ip in iface.network and \
                iface.network.prefixlen < iface.network.max_prefixlen:
            return iface.network
    return None


def with_hairpin_networks(module, forwards, interfaces):
    """The forwards with guest_network filled in for masquerade=auto from the host's connected routes,
    and the warnings for those whose guest is on no connected network (no hairpin rule for them)."""
    networks = {}    # one route lookup per guest address, not per forward
    result, warnings = [], []
    for fwd in forwards:
        if fwd.masquerade == 'auto' and fwd.guest_network is None:
            if fwd.guest_ip not in networks:
                networks[fwd.guest_ip] = connected_network(module, fwd.guest_ip, interfaces)
            net = networks[fwd.guest_ip]
            if net is None:
                warnings.append('forward %s: %s is not on a network connected to this host, so no hairpin '
                                'MASQUERADE was written; set guest_network to add one' % (fwd.label, fwd.guest_ip))
            else:
                fwd = dataclasses.replace(fwd, guest_network=net)
        result.append(fwd)
    return result, warnings
