# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Stage 1 of the rule engine, the forward: PRIVATE to this collection, no stable API.

Pure Python, no I/O. A *forward* is one host port or port range on the public side mapped to one
guest port or range of the same size. This stage parses and validates raw forwards (every problem
at once, each naming its forward) into Forward objects; every address is made anew from its parsed
value. Next: _render.py (the rules), then _plan.py (against the live ruleset).
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
from dataclasses import dataclass

PROTOCOLS = ('tcp', 'udp', 'sctp')
MASQUERADE_MODES = ('auto', 'always', 'never')
FAMILIES = (4, 6)

# Every pattern is matched whole (re.fullmatch) and ASCII only: "$" would let a final newline through,
# and "\\d" would take non-ASCII digits.
_GUEST_NAME_RE = re.compile(r'[A-Za-z0-9][A-Za-z0-9._+:@-]{0,63}', re.ASCII)
_IFACE_RE = re.compile(r'[A-Za-z0-9_.@-]{1,15}', re.ASCII)
_PORT_RE = re.compile(r' *([0-9]{1,5}) *(?:[-:] *([0-9]{1,5}) *)?', re.ASCII)
_ADDRESS_RE = re.compile(r'[0-9A-Fa-f:.]{2,45}', re.ASCII)
_NETWORK_RE = re.compile(r'[0-9A-Fa-f:.]{2,45}(?:/[0-9]{1,3})?', re.ASCII)


class ForwardError(ValueError):
    """Invalid input; ``errors`` lists every problem found, each naming its forward."""

    def __init__(self, errors):
        self.errors = list(errors)
        super().__init__('; '.join(self.errors))


# ---------------------------------------------------------------- the model

@dataclass(frozen=True, order=True)
class PortRange:
    first: int
    last: int

    @property
    def size(self):
        return self.last - self.first + 1

    def overlaps(self, other):
        return self.first <= other.last and other.first <= self.last

    def __str__(self):
        return str(self.first) if self.first == self.last else '%d-%d' % (self.first, self.last)

    @property
    def match(self):
        """Port syntax of ``--dport`` and ``--ctorigdstport``."""
        return str(self.first) if self.first == self.last else '%d:%d' % (self.first, self.last)


@dataclass(frozen=True)
class Forward:
    guest: str
    guest_ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    proto: str
    host_ports: PortRange
    guest_ports: PortRange
    public_ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    in_interface: str | None = None
    sources: tuple = ()
    masquerade: str = 'auto'
    guest_network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    allow_in_use: bool = False   # the admin accepts that a host listener on this port loses its traffic

    @property
    def family(self):
        return self.guest_ip.version

    @property
    def label(self):
        """How errors and comments name this forward: ``web01 tcp/8080->80``."""
        return '%s %s/%s->%s' % (self.guest, self.proto, self.host_ports, self.guest_ports)

    @property
    def sort_key(self):
        return (self.family, str(self.public_ip or ''), self.in_interface or '', self.proto,
                self.host_ports, self.guest)


def valid_interface(name):
    """An interface name iptables can match and print back unchanged.

    The kernel's rules (1-15 characters, not ``.`` or ``..``, no ``/``, ``:`` or whitespace), narrowed
    to letters, digits and ``_.@-``, with an optional trailing ``+`` (iptables' prefix wildcard).
    """
    if not isinstance(name, str):
        return False
    base = name[:-1] if name.endswith('+') else name
    return len(name) <= 15 and base not in ('.', '..') and bool(_IFACE_RE.fullmatch(base))

# ---------------------------------------------------------------- validation


def _printable(value):
    return value if isinstance(value, int) or (isinstance(value, str) and value.isprintable()) else repr(value)


def _label(raw, index):
    guest = raw.get('guest')
    if not (isinstance(guest, str) and _GUEST_NAME_RE.fullmatch(guest)):
        guest = '#%d' % (index + 1) if guest in (None, '') else '#%d (guest %r)' % (index + 1, guest)
    return '%s %s/%s' % (guest, _printable(raw.get('proto') or 'tcp'), _printable(raw.get('host_port')))


def address_text(ip):
    """An address as iptables prints it: ``inet_ntop`` for IPv6, as iptables itself uses."""
    if ip.version == 6:
        return socket.inet_ntop(socket.AF_INET6, ip.packed)
    return str(ip)


def _zone_or(value, what, kind):
    if isinstance(value, str) and '%' in value:
        return ValueError('%s %r has a zone id ("%%..."); kvmnet.nat takes no scoped addresses' % (what, value))
    return ValueError('%s %r is not %s' % (what, value, kind))


@functools.lru_cache(maxsize=65536)
def _address(text):
    """The address ``text`` names, made anew from its packed value, or None (once per distinct text:
    10 000 forwards name a few hundred addresses)."""
    try:
        return ipaddress.ip_address(ipaddress.ip_address(text).packed)
    except ValueError:
        return None


@functools.lru_cache(maxsize=65536)
def _strict_network(text):
    """The network ``text`` names without host bits, made anew from its packed value, or None."""
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError:
        return None
    return ipaddress.ip_network((net.network_address.packed, net.prefixlen))


def parse_address(value, what):
    """One address in plain notation, made anew from its parsed value.

    Refused: anything that is not a string of address characters (no zone id ``%...``, no
    whitespace, no newline), and IPv4-mapped IPv6 addresses (``::ffff:a.b.c.d``: ip6tables never
    sees IPv4 traffic, and iptables prints them differently).
    """
    if not isinstance(value, str) or not _ADDRESS_RE.fullmatch(value):
        raise _zone_or(value, what, 'an IP address')
    ip = _address(value)
    if ip is None:
        raise _zone_or(value, what, 'an IP address')
    if ip.version == 6 and ip.ipv4_mapped is not None:
        raise ValueError('%s %s is an IPv4-mapped IPv6 address; use %s' % (what, value, ip.ipv4_mapped))
    return ip


_EVERY_ADDRESS = {
    'source': 'leave sources empty to allow every source',
    'guest_network': 'give the network the guest is on',
}


def parse_network(value, what):
    """An address or CIDR without host bits, made anew from its parsed value (see parse_address)."""
    if not isinstance(value, str) or not _NETWORK_RE.fullmatch(value):
        raise _zone_or(value, what, 'an IP address or CIDR')
    net = _strict_network(value)
    if net is None:
        try:
            ipaddress.ip_network(value, strict=True)
        except ValueError as exc:
            try:
                loose = ipaddress.ip_network(value, strict=False)
            except ValueError:
                raise ValueError('%s %r is not an IP address or CIDR: %s' % (what, value, exc)) from None
            raise ValueError('%s %s has host bits set (did you mean %s?)' % (what, value, loose)) from None
    if net.prefixlen == 0:
        raise ValueError('%s %s is every address; %s' % (what, value, _EVERY_ADDRESS.get(what, 'give a network')))
    if net.version == 6 and net.network_address.ipv4_mapped is not None:
        raise ValueError('%s %s is an IPv4-mapped IPv6 network; use the IPv4 network' % (what, value))
    return net


def unusable(ip):
    """Why an address can be neither a forward's target nor its public address, or None."""
    if ip.is_unspecified:
        return 'the unspecified address'
    if ip.is_loopback:
        return 'a loopback address'
    if ip.is_multicast:
        return 'a multicast address'
    if ip.version == 4 and ip == ipaddress.IPv4Address('255.255.255.255'):
        return 'the broadcast address'
    if ip.is_link_local:
        return 'a link-local address (it needs an interface to mean anything)'
    return None


@functools.lru_cache(maxsize=65536)
def target_problem(ip, network=None, where=''):
    """Why ``ip`` cannot be a guest address (a DNAT target), alone or in ``network``; or None."""
    reason = unusable(ip)
    if reason:
        return 'guest_ip %s is %s and cannot be a forward target' % (ip, reason)
    if network is not None and network.version == ip.version and network.num_addresses > 2:
        if ip == network.network_address:
            return 'guest_ip %s is the network address of %s%s, not a guest' % (ip, network, where)
        if ip.version == 4 and ip == network.broadcast_address:
            return 'guest_ip %s is the broadcast address of %s%s, not a guest' % (ip, network, where)
    return None


def parse_vip_addresses(values):
    """``vip_addresses`` -> (set of addresses, errors): failover addresses that may be a forward's public
    address although they are not (yet) on this host; each one a usable address."""
    vips, errors = set(), []
    if values in (None, ''):
        return vips, errors
    if not isinstance(values, (list, tuple)):
        return vips, ['vip_addresses must be a list of addresses, not %r' % (values,)]
    for value in values:
        try:
            ip = parse_address(value, 'vip_addresses')
        except ValueError as exc:
            errors.append(str(exc))
            continue
        if unusable(ip):
            errors.append('vip_addresses %s is %s' % (ip, unusable(ip)))
        else:
            vips.add(ip)
    return vips, errors


def _pair_problems(guest_ip, public, host_interfaces, local):
    """host_address_problems' texts for one (guest_ip, public_ip), without the forward's label."""
    if guest_ip in local:
        return ['guest_ip %s is an address of this host (on %s): the forward would publish the host\'s own '
                'services' % (guest_ip, local[guest_ip])]
    problems = []
    for iface, dev in host_interfaces:
        problem = target_problem(guest_ip, iface.network, ' (on %s)' % dev)
        if problem:
            problems.append(problem)
        if public is not None and public not in local and public.version == iface.version and \
                iface.network.num_addresses > 2 and \
                public in (iface.network.network_address, iface.network.broadcast_address):
            problems.append('public_ip %s is the network or broadcast address of %s (on %s)'
                            % (public, iface.network, dev))
    return problems


def host_address_problems(forwards, host_interfaces, vip_addresses=()):
    """Forwards that would point at the hypervisor itself, or take traffic for an address that is not
    its own: (errors, warnings).

    ``host_interfaces``: the host's addresses, ``[(ipaddress.ip_interface, device)]``. A guest_ip
    that is one of them (the bridge's own 192.168.122.1, say) would publish a service bound only
    to it; the network or broadcast address of a connected network is no guest either, nor a
    public address. A public address that is not the host's own is refused: its forwards would take
    traffic routed through this host to someone else's service. Only ``vip_addresses`` (a failover
    address that moves between hosts) may be a public address without being on this host.
    """
    errors, warnings = [], []
    local = {}
    for iface, dev in host_interfaces:
        local.setdefault(iface.ip, dev)
    vips = set(vip_addresses or ())
    seen = {}       # (guest_ip, public_ip) -> its problems: the same for every forward of that pair
    for fwd in forwards:
        pair = (fwd.guest_ip, fwd.public_ip)
        if pair not in seen:
            seen[pair] = _pair_problems(fwd.guest_ip, fwd.public_ip, host_interfaces, local)
        errors.extend('forward %s: %s' % (fwd.label, problem) for problem in seen[pair])
    refused = {e.split('public_ip ', 1)[1].split(' ', 1)[0] for e in errors if ': public_ip ' in e}
    foreign = {}
    for fwd in forwards:
        public = fwd.public_ip
        if public is not None and public not in local and public not in vips and str(public) not in refused:
            foreign.setdefault(public, []).append(fwd.label)
    for public in sorted(foreign, key=str):
        errors.append('public_ip %s is not an address of this host (forwards %s): they would take traffic routed '
                      'through this host to %s, someone else\'s service; give an address of this host, or list '
                      '%s in vip_addresses (role: expose_vip_addresses) if it is a failover address that moves '
                      'between hosts' % (public, ', '.join(foreign[public]), public, public))
    return list(dict.fromkeys(errors)), warnings


def parse_ports(value):
    """``8080``, ``"8080"`` or ``"10000-10009"`` (``:`` accepted too) -> PortRange. ASCII digits only."""
    if isinstance(value, bool):
        raise ValueError('port %r is not a number' % (value,))
    if isinstance(value, float):
        raise ValueError('port %r is a fraction, not a port' % (value,))
    if isinstance(value, int):
        first = last = value
    else:
        m = _PORT_RE.fullmatch(value) if isinstance(value, str) else None
        if not m:
            raise ValueError('port %r is not a port or a range like 10000-10009' % (value,))
        first = int(m.group(1))
        last = int(m.group(2)) if m.group(2) is not None else first
    for port in (first, last):
        if not 1 <= port <= 65535:
            raise ValueError('port %d is out of range 1-65535' % port)
    if last < first:
        raise ValueError('range %d-%d is reversed' % (first, last))
    return PortRange(first, last)


class _Problems(list):
    """The problems of one forward; ``take`` runs a parser and keeps its ValueError as a problem."""

    def take(self, parse, *args, prefix=''):
        try:
            return parse(*args)
        except ValueError as exc:
            self.append(prefix + str(exc))
            return None


def _parse_defaults(public_ip, public_ip6, in_interface, errors):
    """The module-level public address of each family; problems go to ``errors``."""
    defaults = {}
    for key, value, want in (('public_ip', public_ip, 4), ('public_ip6', public_ip6, 6)):
        if value in (None, ''):
            continue
        try:
            addr = parse_address(value, key)
        except ValueError as exc:
            errors.append(str(exc))
            continue
        if addr.version != want:
            errors.append('%s %s is not an IPv%d address' % (key, value, want))
        elif unusable(addr):
            errors.append('%s %s is %s; give an address of this host' % (key, addr, unusable(addr)))
        else:
            defaults[want] = addr
    if in_interface not in (None, '') and not valid_interface(in_interface):
        errors.append('in_interface %r is not an interface name' % (in_interface,))
    return defaults


def _optional(raw, key, parse, problems):
    return problems.take(parse, raw[key], key) if raw.get(key) not in (None, '') else None


def _parse_fields(raw, problems):
    """Each field of one raw forward on its own; None where it is missing or wrong."""
    guest = raw.get('guest')
    if not (isinstance(guest, str) and _GUEST_NAME_RE.fullmatch(guest)):
        problems.append('guest name %r must be 1-64 characters of letters, digits and ._+:@-' % (guest,))
    proto = raw.get('proto') or 'tcp'
    if proto not in PROTOCOLS:
        problems.append('unknown proto %r (use one of %s)' % (raw.get('proto'), ', '.join(PROTOCOLS)))
    masquerade = raw.get('masquerade') or 'auto'
    if masquerade not in MASQUERADE_MODES:
        problems.append('masquerade %r must be one of %s' % (masquerade, ', '.join(MASQUERADE_MODES)))
    iface = raw.get('in_interface')
    if iface not in (None, '') and not valid_interface(iface):
        problems.append('in_interface %r is not an interface name' % (iface,))
    host_ports = problems.take(parse_ports, raw.get('host_port'), prefix='host_port: ')
    guest_ports = host_ports if raw.get('guest_port') in (None, '') else \
        problems.take(parse_ports, raw.get('guest_port'), prefix='guest_port: ')
    sources = raw.get('sources') or []
    if not isinstance(sources, (list, tuple)):
        problems.append('sources %r must be a list of addresses or networks' % (sources,))
        sources = []
    return dict(
        guest=guest, proto=proto, masquerade=masquerade, in_interface=iface or None,
        host_ports=host_ports, guest_ports=guest_ports,
        guest_ip=problems.take(parse_address, raw.get('guest_ip'), 'guest_ip'),
        sources=[problems.take(parse_network, src, 'source') for src in sources],
        guest_network=_optional(raw, 'guest_network', parse_network, problems),
        public_ip=_optional(raw, 'public_ip', parse_address, problems),
        public_given=raw.get('public_ip') not in (None, ''),
    )


def _check_forward(f, defaults, in_interface, problems):
    """Checks across the fields of one forward; fills in the module-level defaults."""
    if f['host_ports'] and f['guest_ports'] and f['host_ports'].size != f['guest_ports'].size:
        problems.append('host range %s has %d ports but guest range %s has %d'
                        % (f['host_ports'], f['host_ports'].size, f['guest_ports'], f['guest_ports'].size))
    guest_ip = f['guest_ip']
    if guest_ip is None:
        return
    family = guest_ip.version
    if f['public_ip'] is not None and unusable(f['public_ip']):
        problems.append('public_ip %s is %s; give an address of this host' % (f['public_ip'], unusable(f['public_ip'])))
    if not f['public_given']:
        f['public_ip'] = defaults.get(family)
    f['in_interface'] = f['in_interface'] or in_interface
    pub = f['public_ip']
    if pub is not None and pub.version != family:
        problems.append('public_ip %s and guest_ip %s are of different IP versions' % (pub, guest_ip))
    if pub is None and not f['in_interface'] and not f['public_given']:
        problems.append('no public_ip%s and no in_interface: an unscoped DNAT would also catch '
                        'traffic to the host\'s own services' % ('6' if family == 6 else ''))
    if pub is not None and pub == guest_ip:
        problems.append('guest_ip %s is the public ip' % guest_ip)
    for src in f['sources']:
        if src is not None and src.version != family:
            problems.append('source %s is not IPv%d like guest_ip %s' % (src, family, guest_ip))
    net = f['guest_network']
    if net is not None and (net.version != family or guest_ip not in net):
        problems.append('guest_network %s does not contain guest_ip %s' % (net, guest_ip))
        net = None
    problem = target_problem(guest_ip, net)
    if problem:
        problems.append(problem)


def parse_forwards(raw_forwards, public_ip=None, public_ip6=None, in_interface=None):
    """Validate raw forwards (dicts as the module receives them) into Forward objects.

    Every problem is collected, so one run tells the admin everything that is wrong;
    nothing is applied unless the whole set is valid.
    """
    errors = []
    defaults = _parse_defaults(public_ip, public_ip6, in_interface, errors)
    default_iface = in_interface if valid_interface(in_interface) else None
    forwards = []
    for index, raw in enumerate(raw_forwards or []):
        if not isinstance(raw, dict):
            errors.append('forward #%d: %r is not a dict' % (index + 1, raw))
            continue
        problems = _Problems()
        fields = _parse_fields(raw, problems)
        _check_forward(fields, defaults, default_iface, problems)
        if problems:
            errors.extend('forward %s: %s' % (_label(raw, index), p) for p in problems)
            continue
        forwards.append(Forward(
            guest=fields['guest'], guest_ip=fields['guest_ip'], proto=fields['proto'],
            host_ports=fields['host_ports'], guest_ports=fields['guest_ports'], public_ip=fields['public_ip'],
            in_interface=fields['in_interface'], sources=tuple(sorted(set(fields['sources']), key=str)),
            masquerade=fields['masquerade'], guest_network=fields['guest_network'],
            allow_in_use=raw.get('allow_in_use') is True,
        ))
    errors.extend(_overlaps(forwards))
    if errors:
        raise ForwardError(errors)
    return sorted(forwards, key=lambda f: f.sort_key)


def _interfaces_meet(a, b):
    """Whether one packet's inbound interface can match both ``in_interface`` values: an unset one matches
    every interface, and a trailing ``+`` is iptables' prefix wildcard (``eth+`` matches ``eth0``)."""
    if not a or not b:
        return True
    a_wild, b_wild = a.endswith('+'), b.endswith('+')
    a_stem, b_stem = (a[:-1] if a_wild else a), (b[:-1] if b_wild else b)
    if a_wild and b_wild:
        return a_stem.startswith(b_stem) or b_stem.startswith(a_stem)
    if a_wild:
        return b_stem.startswith(a_stem)
    if b_wild:
        return a_stem.startswith(b_stem)
    return a == b


def scopes_meet(a, b):
    """The overlap rule, ports aside (README, "When two forwards overlap"): True when one packet could
    match the DNAT of both ``a`` and ``b``.

    ``a`` and ``b`` have ``proto``, ``family``, ``public_ip`` and ``in_interface`` (a Forward, or an
    inventory claim whose unknown family or interface is None). They do not meet when their protocols
    differ, their families differ (an IPv4 and an IPv6 forward are in different tables, on different
    public addresses), both have a public address and the addresses differ, or both have an inbound
    interface and no interface matches both. An unscoped side (no public address, no interface, family
    unknown) meets every value of that key. Sources do not separate two forwards.
    """
    if a.proto != b.proto:
        return False
    if a.family is not None and b.family is not None and a.family != b.family:
        return False
    if a.public_ip is not None and b.public_ip is not None and a.public_ip != b.public_ip:
        return False
    return _interfaces_meet(a.in_interface, b.in_interface)


def _sweep(members, claims, pairs, among=None):
    """Pairs of ``members`` (indexes into ``claims``) whose host ports overlap and whose scopes meet, by one
    sweep over them sorted by first port; with ``among``, only pairs with at least one member in it."""
    active = []    # indexes whose range may still reach the ports that follow
    for index in sorted(members, key=lambda i: (claims[i].host_ports.first, i)):
        first = claims[index].host_ports.first
        active = [other for other in active if claims[other].host_ports.last >= first]
        for other in active:
            if (among is None or index in among or other in among) and scopes_meet(claims[index], claims[other]):
                pairs.add((min(index, other), max(index, other)))
        active.append(index)


def overlapping(claims):
    """Every pair ``(i, j)``, i < j, sorted, of ``claims`` that overlap: scopes_meet and a common host port.

    One sweep by first port per protocol and public address (n log n, plus one step per overlap found);
    the claims without a public address meet every address, so they join each address's sweep.
    """
    by_address, open_scope = {}, {}
    for index, claim in enumerate(claims):
        if claim.public_ip is None:
            open_scope.setdefault(claim.proto, []).append(index)
        else:
            by_address.setdefault((claim.proto, claim.public_ip), []).append(index)
    pairs = set()
    for proto, members in open_scope.items():
        _sweep(members, claims, pairs)
    for (proto, _address), members in by_address.items():
        unscoped = open_scope.get(proto, [])
        _sweep(members + unscoped, claims, pairs, among=set(members) if unscoped else None)
    return sorted(pairs)


def _overlaps(forwards):
    """One error per pair of forwards that claim a common port (see overlapping), in input order."""
    errors = []
    for i, j in overlapping(forwards):
        a, b = forwards[i], forwards[j]
        errors.append('forward %s and forward %s claim the same %s port(s) on %s'
                      % (a.label, b.label, a.proto, a.public_ip or b.public_ip or a.in_interface or b.in_interface))
    return errors
