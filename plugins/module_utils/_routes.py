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


def parse_routes(text):
    """``ip -j route ...`` -> its routes (dicts); [] when it printed no JSON list."""
    try:
        routes = json.loads(text or '[]')
    except ValueError:
        return []
    return [route for route in routes if isinstance(route, dict)] if isinstance(routes, list) else []


def read_routes(module, family, *args):
    """parse_routes of ``ip -j -FAMILY route ARGS``; [] when ip is missing or fails."""
    ip_cmd = module.get_bin_path('ip')
    if not ip_cmd:
        return []
    rc, out, _err = run(module, [ip_cmd, '-j', '-%d' % family, 'route'] + list(args), check=False)
    return parse_routes(out) if rc == 0 else []


def route_get(module, address, family):
    """The route the kernel would take to ``address`` (``ip -j route get``), or None."""
    routes = read_routes(module, family, 'get', str(address))
    return routes[0] if routes else None


BATCH_FROM = 8      # more distinct addresses than this: one ``ip -batch`` instead of one ``ip`` per address


def routes_get(module, addresses):
    """{address: the route the kernel would take to it, or None} for ip_address objects, with ONE ``ip -j -N
    -force -batch -`` per family (``route get A`` per line; -force goes on past an unreachable one, which
    prints nothing). Each route is matched to its address by its ``dst``."""
    found = {address: None for address in addresses}
    ip_cmd = module.get_bin_path('ip')
    if not ip_cmd:
        return found
    for family in (4, 6):
        wanted = [a for a in found if a.version == family]
        if not wanted:
            continue
        data = ''.join('route get %s\n' % a for a in wanted)
        _rc, out, _err = run(module, [ip_cmd, '-j', '-%d' % family, '-force', '-batch', '-'], data=data, check=False)
        for route in _json_values(out):
            try:
                dst = ipaddress.ip_address(route.get('dst'))
            except (TypeError, ValueError):
                continue
            if dst in found and found[dst] is None:
                found[dst] = route
    return found


def _json_values(text):
    """The route dicts of the JSON lists ``ip -batch`` prints one after the other."""
    decoder, pos, text = json.JSONDecoder(), 0, text or ''
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            return
        try:
            value, pos = decoder.raw_decode(text, pos)
        except ValueError:
            return
        for route in value if isinstance(value, list) else []:
            if isinstance(route, dict):
                yield route


def default_routes(module, family):
    """The family's default routes (``ip -j route show default``)."""
    return read_routes(module, family, 'show', 'default')


def connected_network(module, ip, interfaces, route=False):
    """The directly connected network holding ``ip`` (e.g. libvirt's 192.168.122.0/24), or None.

    ``ip route get`` names the device the kernel would use (``route``: that route, already read, or None);
    the network is that device's address whose prefix contains ``ip`` (``interfaces`` as host_interfaces
    returns them).
    """
    route = route_get(module, ip, ip.version) if route is False else route
    if route is None or route.get('gateway') or not route.get('dev'):
        return None
    for iface, dev in interfaces:
        if dev == route['dev'] and iface.version == ip.version and ip in iface.network and \
                iface.network.prefixlen < iface.network.max_prefixlen:
            return iface.network
    return None


def with_hairpin_networks(module, forwards, interfaces):
    """The forwards with guest_network filled in for masquerade=auto from the host's connected routes,
    and the warnings for those whose guest is on no connected network (no hairpin rule for them)."""
    networks = {}    # one route lookup per guest address, not per forward
    wanted = list(dict.fromkeys(fwd.guest_ip for fwd in forwards
                                if fwd.masquerade == 'auto' and fwd.guest_network is None))
    routes = routes_get(module, wanted) if len(wanted) > BATCH_FROM else {}
    result, warnings = [], []
    for fwd in forwards:
        if fwd.masquerade == 'auto' and fwd.guest_network is None:
            if fwd.guest_ip not in networks:
                networks[fwd.guest_ip] = connected_network(module, fwd.guest_ip, interfaces,
                                                           routes.get(fwd.guest_ip, False))
            net = networks[fwd.guest_ip]
            if net is None:
                warnings.append('forward %s: %s is not on a network connected to this host, so no hairpin '
                                'MASQUERADE was written; set guest_network to add one' % (fwd.label, fwd.guest_ip))
            else:
                fwd = dataclasses.replace(fwd, guest_network=net)
        result.append(fwd)
    return result, warnings
