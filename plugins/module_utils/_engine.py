# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The rule engine of kvmnet.nat: PRIVATE to this collection, no stable API.

Pure Python, no I/O: it validates forwards, renders the rules the collection
owns, parses ``iptables-save`` output, and plans the one ``iptables-restore
--noflush`` payload that brings the live ruleset to the desired one.

Vocabulary (one name per idea):

- a *forward* is one host port or port range on the public side mapped to one
  guest port or range of the same size;
- the *managed* rules are the rules in the chains we own (``<PREFIX>_*``) and
  the one jump per built-in chain that leads into them.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import shlex
import socket
from dataclasses import dataclass, field

OWNER_TAG = 'kvmnet.nat'
PROTOCOLS = ('tcp', 'udp', 'sctp')
MASQUERADE_MODES = ('auto', 'always', 'never')
FAMILIES = (4, 6)
DEFAULT_PREFIX = 'KVMNAT'

# Every pattern is matched whole (re.fullmatch) and ASCII only: "$" would let a final newline through,
# and "\\d" would take non-ASCII digits.
_GUEST_NAME_RE = re.compile(r'[A-Za-z0-9][A-Za-z0-9._+:@-]{0,63}', re.ASCII)
_IFACE_RE = re.compile(r'[A-Za-z0-9_.@-]{1,15}', re.ASCII)
_PREFIX_RE = re.compile(r'[A-Z][A-Z0-9]{0,15}', re.ASCII)
_PORT_RE = re.compile(r' *([0-9]{1,5}) *(?:[-:] *([0-9]{1,5}) *)?', re.ASCII)
_ADDRESS_RE = re.compile(r'[0-9A-Fa-f:.]{2,45}', re.ASCII)
_NETWORK_RE = re.compile(r'[0-9A-Fa-f:.]{2,45}(?:/[0-9]{1,3})?', re.ASCII)


class ForwardError(ValueError):
    """Invalid input; ``errors`` lists every problem found, each naming its forward."""

    def __init__(self, errors):
        self.errors = list(errors)
        super().__init__('; '.join(self.errors))


class RulesetError(Exception):
    """The live ruleset is in a state the engine refuses to change."""


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


def valid_prefix(prefix):
    return isinstance(prefix, str) and bool(_PREFIX_RE.fullmatch(prefix))


def valid_interface(name):
    """An interface name iptables can match and print back unchanged.

    The kernel's rules (1-15 characters, not ``.`` or ``..``, no ``/``, ``:`` or whitespace), narrowed
    to letters, digits and ``_.@-``, with an optional trailing ``+`` (iptables' prefix wildcard).
    """
    if not isinstance(name, str):
        return False
    base = name[:-1] if name.endswith('+') else name
    return len(name) <= 15 and base not in ('.', '..') and bool(_IFACE_RE.fullmatch(base))


def chain_names(prefix=DEFAULT_PREFIX):
    """The chains the engine owns, by role."""
    return {'dnat': prefix + '_DNAT', 'snat': prefix + '_SNAT', 'fwd': prefix + '_FWD'}


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


def parse_address(value, what):
    """One address in plain notation, made anew from its parsed value.

    Refused: anything that is not a string of address characters (no zone id ``%...``, no
    whitespace, no newline), and IPv4-mapped IPv6 addresses (``::ffff:a.b.c.d``: ip6tables never
    sees IPv4 traffic, and iptables prints them differently).
    """
    if not isinstance(value, str) or not _ADDRESS_RE.fullmatch(value):
        raise _zone_or(value, what, 'an IP address')
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        raise _zone_or(value, what, 'an IP address') from None
    ip = ipaddress.ip_address(ip.packed)
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
    try:
        net = ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        try:
            loose = ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise ValueError('%s %r is not an IP address or CIDR: %s' % (what, value, exc)) from None
        raise ValueError('%s %s has host bits set (did you mean %s?)' % (what, value, loose)) from None
    net = ipaddress.ip_network((net.network_address.packed, net.prefixlen))
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


def host_address_problems(forwards, host_interfaces):
    """Forwards that would point at the hypervisor itself: (errors, warnings).

    ``host_interfaces``: the host's addresses, ``[(ipaddress.ip_interface, device)]``. A guest_ip
    that is one of them (the bridge's own 192.168.122.1, say) would publish a service bound only
    to it; the network or broadcast address of a connected network is no guest either, nor a
    public address. A public address that is not the host's own is allowed (a failover address
    routed to this host works that way) but said in a warning.
    """
    errors, warnings = [], []
    local = {}
    for iface, dev in host_interfaces:
        local.setdefault(iface.ip, dev)
    for fwd in forwards:
        if fwd.guest_ip in local:
            errors.append('forward %s: guest_ip %s is an address of this host (on %s): the forward would '
                          'publish the host\'s own services' % (fwd.label, fwd.guest_ip, local[fwd.guest_ip]))
            continue
        for iface, dev in host_interfaces:
            problem = target_problem(fwd.guest_ip, iface.network, ' (on %s)' % dev)
            if problem:
                errors.append('forward %s: %s' % (fwd.label, problem))
            public = fwd.public_ip
            if public is not None and public not in local and public.version == iface.version and \
                    iface.network.num_addresses > 2 and \
                    public in (iface.network.network_address, iface.network.broadcast_address):
                errors.append('forward %s: public_ip %s is the network or broadcast address of %s (on %s)'
                              % (fwd.label, public, iface.network, dev))
    refused = {e.split('public_ip ', 1)[1].split(' ', 1)[0] for e in errors if ': public_ip ' in e}
    for public in sorted({f.public_ip for f in forwards if f.public_ip is not None and f.public_ip not in local
                          and str(f.public_ip) not in refused}, key=str):
        warnings.append('public_ip %s is not an address of this host: its forwards take traffic routed through '
                        'this host to %s (as for a failover address routed here); check it if that is not '
                        'what you meant' % (public, public))
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


def _scopes_meet(a, b):
    if a.family != b.family or a.proto != b.proto:
        return False
    if a.public_ip is not None and b.public_ip is not None and a.public_ip != b.public_ip:
        return False
    if a.in_interface and b.in_interface and a.in_interface != b.in_interface:
        return False
    return True


def _overlaps(forwards):
    """Pairs of forwards that claim a common port: a sweep over each (family, proto) by first port.

    Pairs are reported in input order, as a pairwise comparison would, without its n² cost.
    """
    pairs = []
    groups = {}
    for index, fwd in enumerate(forwards):
        groups.setdefault((fwd.family, fwd.proto), []).append((fwd.host_ports.first, index, fwd))
    for members in groups.values():
        active = []    # (last port, index, forward) of ranges that may still overlap what follows
        for first, index, fwd in sorted(members, key=lambda m: (m[0], m[1])):
            active = [item for item in active if item[0] >= first]
            for _last, other_index, other in active:
                if _scopes_meet(fwd, other):
                    pairs.append((min(index, other_index), max(index, other_index)))
            active.append((fwd.host_ports.last, index, fwd))
    errors = []
    for i, j in sorted(pairs):
        a, b = forwards[i], forwards[j]
        errors.append('forward %s and forward %s claim the same %s port(s) on %s'
                      % (a.label, b.label, a.proto, a.public_ip or b.public_ip or a.in_interface or b.in_interface))
    return errors


# ---------------------------------------------------------------- rendering

def _addr(ip):
    """An address as iptables-save prints a -s/-d match."""
    return '%s/%d' % (address_text(ip), 32 if ip.version == 4 else 128)


def _net(net):
    return '%s/%d' % (address_text(net.network_address), net.prefixlen)


def _to_destination(fwd):
    text = address_text(fwd.guest_ip)
    host = text if fwd.family == 4 else '[%s]' % text
    gp, hp = fwd.guest_ports, fwd.host_ports
    if gp.size > 1 and gp == hp:
        return text  # ports kept as they are
    if gp.size == 1:
        return '%s:%d' % (host, gp.first)
    return '%s:%d-%d/%d' % (host, gp.first, gp.last, hp.first)


def _comment(text):
    return '-m comment --comment "%s: %s"' % (OWNER_TAG, text)


def _origin_match(fwd):
    """conntrack match: the connection was DNATed by this very forward."""
    parts = ['-m conntrack --ctstate DNAT']
    if fwd.public_ip is not None:
        parts.append('--ctorigdst %s' % address_text(fwd.public_ip))
    parts.append('--ctorigdstport %s' % fwd.host_ports.match)
    return ' '.join(parts)


def render_dnat(fwd):
    rules = []
    for src in fwd.sources or (None,):
        parts = []
        if src is not None:
            parts.append('-s %s' % _net(src))
        if fwd.public_ip is not None:
            parts.append('-d %s' % _addr(fwd.public_ip))
        if fwd.in_interface:
            parts.append('-i %s' % fwd.in_interface)
        parts.append('-p {p} -m {p} --dport {d}'.format(p=fwd.proto, d=fwd.host_ports.match))
        parts.append(_comment(fwd.label))
        parts.append('-j DNAT --to-destination %s' % _to_destination(fwd))
        rules.append(' '.join(parts))
    return rules


def render_accept(fwd):
    return ' '.join([
        '-d %s' % _addr(fwd.guest_ip),
        '-p {p} -m {p} --dport {d}'.format(p=fwd.proto, d=fwd.guest_ports.match),
        _origin_match(fwd),
        _comment(fwd.label),
        '-j ACCEPT',
    ])


def render_established(name, guest_side, public_ip):
    """Accept the rest of the connections DNATed to ``guest_side`` (a guest's address or its network).

    A connection whose reply comes from the guest side and whose original destination was not on
    it was DNATed there. Its first packet passed a forward's accept rule (or someone else's), so
    the rest of it may pass too, both directions, before any per-forward rule is walked.
    """
    if public_ip is not None:
        origin = '--ctorigdst %s' % address_text(public_ip)
    else:
        origin = '! --ctorigdst %s' % _ct_addr(guest_side)
    return ' '.join([
        '-m conntrack --ctstate RELATED,ESTABLISHED',
        origin,
        '--ctreplsrc %s' % _ct_addr(guest_side),
        _comment('%s established' % name),
        '-j ACCEPT',
    ])


def _ct_addr(value):
    """An address or network as iptables-save prints a conntrack address match (no /32 or /128)."""
    if isinstance(value, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return address_text(value.network_address) if value.prefixlen == value.max_prefixlen else _net(value)
    return address_text(value)


def established_scopes(forwards):
    """(name, guest side, public ip) of the established accepts, in order of first use.

    One per guest network (the network a forward's masquerade uses), or per guest when its
    network is not known; a scope already covered by a broader one is left out. On a libvirt
    network this accepts nothing libvirt's own LIBVIRT_FWI/FWO rules would not: they accept every
    established packet into the network and everything out of it.
    """
    scopes = []
    for f in forwards:
        if f.guest_network is not None:
            scope = ('network %s' % _net(f.guest_network), f.guest_network, f.public_ip)
        else:
            scope = (f.guest, f.guest_ip, f.public_ip)
        if scope not in scopes:
            scopes.append(scope)

    def as_net(side):
        return side if isinstance(side, (ipaddress.IPv4Network, ipaddress.IPv6Network)) else ipaddress.ip_network(side)

    def covers(wide, narrow):
        """Every connection ``narrow`` accepts, ``wide`` accepts too."""
        if wide is narrow or not as_net(narrow[1]).subnet_of(as_net(wide[1])):
            return False
        if wide[2] is not None:
            return wide[2] == narrow[2]
        return narrow[2] is not None and narrow[2] not in as_net(wide[1])

    return [s for s in scopes if not any(covers(w, s) for w in scopes)]


def render_masquerade(fwd):
    if fwd.masquerade == 'never' or (fwd.masquerade == 'auto' and fwd.guest_network is None):
        return []
    parts = []
    if fwd.masquerade == 'auto':
        parts.append('-s %s' % _net(fwd.guest_network))
    parts.append('-d %s' % _addr(fwd.guest_ip))
    parts.append('-p {p} -m {p} --dport {d}'.format(p=fwd.proto, d=fwd.guest_ports.match))
    parts.append(_origin_match(fwd))
    parts.append(_comment('%s %s' % (fwd.label, 'hairpin' if fwd.masquerade == 'auto' else 'masquerade')))
    parts.append('-j MASQUERADE')
    return [' '.join(parts)]


def render_jumps(prefix):
    """(table, built-in chain, rule spec) of the one jump each built-in chain gets."""
    chains = chain_names(prefix)
    tag = _comment('jump')
    return [
        ('nat', 'PREROUTING', '%s -j %s' % (tag, chains['dnat'])),
        ('nat', 'OUTPUT', '-m addrtype --dst-type LOCAL %s -j %s' % (tag, chains['dnat'])),
        ('nat', 'POSTROUTING', '%s -j %s' % (tag, chains['snat'])),
        ('filter', 'FORWARD', '%s -j %s' % (tag, chains['fwd'])),
    ]


@dataclass
class Desired:
    """The managed state of one family: chain -> rules, and the jumps."""
    family: int
    prefix: str = DEFAULT_PREFIX
    chains: dict = field(default_factory=dict)   # (table, chain) -> [spec]
    jumps: list = field(default_factory=list)    # [(table, builtin, spec)]

    @property
    def empty(self):
        return not self.jumps and not self.chains


# A chain holds at most this many rules of one protocol before they are split by port.
LEAF_RULES = 8


class _Dispatch:
    """Lay rules out so that a new connection is tested against O(log N) of them, not N.

    The rules of one protocol, each keyed by the port range it can match, stay in the chain
    itself while there are at most ``LEAF_RULES`` of them. Beyond that they go into a binary tree
    of sub-chains (``<chain>_<n>``): a node sends the ports up to a split point with ``-g`` to one
    half and every other packet to the other half; a rule whose range crosses the split is in
    both. Every packet reaches one leaf, which holds, in their original order, all the rules that
    can match its port, so the first match is the one the flat chain would find. With ``-g``, a
    packet no rule takes returns straight to the built-in chain, and a node's second rule needs
    no match of its own (only the top node tests both halves: any packet can arrive there).

    A tree that other rules follow in the same chain (``final=False``) is entered with ``-j``
    instead: a packet none of its rules takes then comes back and meets those rules. (With
    ``-g`` it would return to the built-in chain and skip them: the hairpin MASQUERADE of an
    ``auto`` forward behind a tree of ``always`` forwards was lost that way.)
    """

    def __init__(self, chains, table, chain, node_match):
        self.chains, self.table, self.base = chains, table, chain
        self.node_match = node_match   # (proto, PortRange, top) -> match text of a dispatch rule
        self.count = 0

    def rules(self, items, final=True):
        """items: [(proto, PortRange, spec)] in chain order -> the rules of the top chain."""
        out = []
        for proto in PROTOCOLS:
            group = [(ports, spec) for p, ports, spec in items if p == proto]
            out.extend(self._node(proto, group, top=True, enter='-g' if final else '-j'))
        return out

    def _node(self, proto, group, top=False, enter='-g'):
        if len(group) <= LEAF_RULES:
            return [spec for _ports, spec in group]
        firsts = sorted(ports.first for ports, _spec in group)
        split = firsts[(len(firsts) - 1) // 2]          # lower half: ports up to and including split
        low = [(p, s) for p, s in group if p.first <= split]
        high = [(p, s) for p, s in group if p.last > split]
        if len(low) == len(group) or len(high) == len(group):
            return [spec for _ports, spec in group]     # one port claimed in many scopes: no split helps
        low_ports = PortRange(firsts[0], split)
        high_ports = PortRange(split + 1, max(p.last for p, _s in high))
        low_rule = '%s %s %s %s' % (self.node_match(proto, low_ports, top), _comment('%s/%s' % (proto, low_ports)),
                                    enter, self.chain(self._node(proto, low)))
        # below the top, a packet that gets here has a port of this node and not of the lower half
        high_match = self.node_match(proto, high_ports, top) + ' ' if top else ''
        high_rule = '%s%s %s %s' % (high_match, _comment('%s/%s' % (proto, high_ports)),
                                    enter, self.chain(self._node(proto, high)))
        return [low_rule, high_rule]

    def chain(self, rules):
        self.count += 1
        name = '%s_%d' % (self.base, self.count)
        self.chains[(self.table, name)] = rules
        return name


def _port_node(proto, ports, top):
    return '-p {p} -m {p} --dport {d}'.format(p=proto, d=ports.match)


def _origin_node(proto, ports, top):
    state = '--ctstate DNAT ' if top else ''
    return '-p %s -m conntrack %s--ctorigdstport %s' % (proto, state, ports.match)


def _snat_rules(dispatch, items):
    """The SNAT chain: hairpin rules (``-s <guest network>``) behind one test of the source each.

    Connections from outside, most of them, then pass one rule per guest network instead of a
    port lookup. items: [(guest network or None, (proto, PortRange, spec))].
    """
    groups = {}
    for network, item in items:
        groups.setdefault(network, []).append(item)
    out = []
    for index, (network, group) in enumerate(groups.items()):
        if network is None or len(group) <= LEAF_RULES:
            out.extend(dispatch.rules(group, final=index == len(groups) - 1))
        else:
            out.append('-s %s %s -j %s' % (_net(network), _comment('hairpin from %s' % _net(network)),
                                           dispatch.chain(dispatch.rules(group))))
    return out


def desired_state(forwards, family, prefix=DEFAULT_PREFIX):
    """What the managed chains of one family must hold. No forwards -> nothing at all."""
    mine = [f for f in forwards if f.family == family]
    state = Desired(family=family, prefix=prefix)
    if not mine:
        return state
    names = chain_names(prefix)
    dnat, snat, fwd = [], [], []
    for f in mine:
        dnat.extend((f.proto, f.host_ports, rule) for rule in render_dnat(f))
        snat.extend((f.guest_network if f.masquerade == 'auto' else None, (f.proto, f.host_ports, rule))
                    for rule in render_masquerade(f))
        fwd.append((f.proto, f.host_ports, render_accept(f)))
    chains = state.chains
    chains[('nat', names['dnat'])] = _Dispatch(chains, 'nat', names['dnat'], _port_node).rules(dnat)
    chains[('nat', names['snat'])] = _snat_rules(_Dispatch(chains, 'nat', names['snat'], _origin_node), snat)
    # established flows leave the chain first: their per-packet cost is a rule per guest network
    established = [render_established(*scope) for scope in established_scopes(mine)]
    chains[('filter', names['fwd'])] = established + _Dispatch(chains, 'filter', names['fwd'], _origin_node).rules(fwd)
    state.jumps = render_jumps(prefix)
    return state


# ---------------------------------------------------------------- parsing

@dataclass
class Table:
    name: str
    chains: dict = field(default_factory=dict)   # chain -> policy ('-' for user chains)
    rules: dict = field(default_factory=dict)    # chain -> [spec]


def parse_save(text):
    """Parse ``iptables-save`` output into {table: Table}; counters are dropped."""
    tables = {}
    current = None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith('#'):
            continue
        if line.startswith('*'):
            current = Table(line[1:])
            tables[current.name] = current
        elif line == 'COMMIT':
            current = None
        elif current is None:
            raise RulesetError('iptables-save line %d outside a table: %s' % (lineno, raw))
        elif line.startswith(':'):
            name, policy = line[1:].split()[:2]
            current.chains[name] = policy
            current.rules.setdefault(name, [])
        elif line.startswith(('-A ', '[')):
            if line.startswith('['):  # "[pkts:bytes] -A CHAIN spec" (iptables-save -c): drop counters
                line = line.split(']', 1)[1].strip()
            parts = line.split(None, 2)
            if len(parts) < 3 or parts[0] != '-A':
                raise RulesetError('iptables-save line %d has no rule: %s' % (lineno, raw))
            current.rules.setdefault(parts[1], []).append(parts[2])
        else:
            raise RulesetError('iptables-save line %d not understood: %s' % (lineno, raw))
    return tables


def _targets(spec):
    """The jump target of a rule spec (-j or -g), or None."""
    try:
        words = shlex.split(spec)
    except ValueError:
        words = spec.split()
    for i, word in enumerate(words[:-1]):
        if word in ('-j', '--jump', '-g', '--goto'):
            return words[i + 1]
    return None


def _is_ours(spec):
    return ('--comment "%s: ' % OWNER_TAG) in spec or ('--comment %s:' % OWNER_TAG) in spec


def owned(chain, prefix, table):
    """Our chains: exactly <prefix>_DNAT and _SNAT in nat, <prefix>_FWD in filter, and their
    numbered sub-chains. A chain of another name, or of our name in another table, is not ours."""
    m = re.fullmatch(r'%s_(DNAT|SNAT|FWD)(?:_[1-9][0-9]{0,5})?' % re.escape(prefix), chain, re.ASCII)
    return bool(m) and table == ('filter' if m.group(1) == 'FWD' else 'nat')


def jumps_into_ours(spec, prefix, table):
    """True if the rule jumps (or goes) to one of our chains."""
    return owned(_targets(spec) or '', prefix, table)


def our_jumps(prefix):
    """{(table, built-in chain): the one jump spec kvmnet.nat puts there} (from render_jumps)."""
    return {(table, chain): spec for table, chain, spec in render_jumps(prefix)}


# ---------------------------------------------------------------- the grammar of what we write

class PayloadError(RulesetError):
    """A payload line that the renderer does not write: never handed to iptables-restore."""


_COMMENT_RE = re.compile(r'-m comment --comment "%s: ([A-Za-z0-9._+:@/ >-]{1,160})"' % re.escape(OWNER_TAG), re.ASCII)
_DEST6_RE = re.compile(r'\[([0-9a-f:.]+)\]:([0-9]{1,5})(?:-([0-9]{1,5})/([0-9]{1,5}))?', re.ASCII)
_DEST4_RE = re.compile(r'([0-9.]+)(?::([0-9]{1,5})(?:-([0-9]{1,5})/([0-9]{1,5}))?)?', re.ASCII)


def _canonical(text, parse):
    try:
        return parse(text) == text
    except ValueError:
        return False


def _is_net(text):
    """A -s/-d value as we render it: an address or network with its length."""
    return _canonical(text, lambda t: _net(parse_network(t, 'match')) if '/' in t else None)


def _is_ct_addr(text):
    """A conntrack address as we render it: a bare address, or a network shorter than a host."""
    def render(t):
        return _ct_addr(parse_network(t, 'match') if '/' in t else parse_address(t, 'match'))
    return _canonical(text, render)


def _is_ports(text):
    return _canonical(text, lambda t: parse_ports(t).match)


def _is_destination(text):
    """A --to-destination as we render it: ``A``, ``A:port``, ``A:first-last/base``; IPv6 in brackets
    when a port follows, bare when not."""
    if text.startswith('['):
        m, family = _DEST6_RE.fullmatch(text), 6
    elif text.count(':') > 1:
        m, family = None, 6
        if not _canonical(text, lambda t: address_text(parse_address(t, 'match'))):
            return False
        return ipaddress.ip_address(text).version == 6
    else:
        m, family = _DEST4_RE.fullmatch(text), 4
    if not m:
        return False
    address, ports = m.group(1), [int(p) for p in m.groups()[1:] if p is not None]
    if not _canonical(address, lambda t: address_text(parse_address(t, 'match'))):
        return False
    if ipaddress.ip_address(address).version != family:
        return False
    return all(1 <= p <= 65535 for p in ports) and (len(ports) < 2 or ports[0] <= ports[1])


def _rule_problem(spec, prefix, table):
    """Why ``spec`` is not a rule the renderer writes into ``table``, or None."""
    comments = _COMMENT_RE.findall(spec)
    if len(comments) != 1:
        return 'no kvmnet.nat comment, or more than one'
    words = _COMMENT_RE.sub('-m comment --comment X', spec).split(' ')

    def own(chain):
        return owned(chain, prefix, table)

    terminal = ('ACCEPT',) if table == 'filter' else ('DNAT', 'MASQUERADE')
    values = {
        '-s': _is_net, '-d': _is_net, '-i': valid_interface, '-p': lambda v: v in PROTOCOLS,
        '-m': lambda v: v in PROTOCOLS + ('conntrack', 'comment', 'addrtype'), '--comment': lambda v: v == 'X',
        '--dport': _is_ports, '--ctorigdstport': _is_ports, '--ctstate': lambda v: v in ('DNAT', 'RELATED,ESTABLISHED'),
        '--ctorigdst': _is_ct_addr, '--ctreplsrc': _is_ct_addr, '--dst-type': lambda v: v == 'LOCAL',
        '--to-destination': _is_destination, '-g': own,
        '-j': lambda v: v in terminal or own(v),
    }
    seen = []
    i = 0
    while i < len(words):
        option = words[i]
        if option == '!' and words[i + 1:i + 2] == ['--ctorigdst']:
            i += 1
            continue
        check = values.get(option)
        if check is None or i + 1 >= len(words):
            return 'option %r is not one kvmnet.nat writes' % option
        if not check(words[i + 1]):
            return 'value %r of %s is not one kvmnet.nat writes' % (words[i + 1], option)
        if option != '-m' and option in seen:
            return 'option %s twice' % option
        seen.append(option)
        i += 2
    targets = [o for o in seen if o in ('-j', '-g')]
    if len(targets) != 1 or seen[-1] not in ('-j', '-g', '--to-destination'):
        return 'not exactly one target at the end'
    if ('--to-destination' in seen) != ('-j' in seen and words[words.index('-j') + 1] == 'DNAT'):
        return 'a DNAT target goes with --to-destination, and only it'
    return None


def check_payload(text, prefix, comments=False):
    """Raise PayloadError unless every line of a restore payload is one the engine writes.

    The lines: ``*nat``/``*filter`` ... ``COMMIT``; ``:<our chain> - [0:0]``; ``-A <our chain> <rule>``
    with every option and value of a rule the renderer writes (addresses and ports re-parsed and
    rendered again to the same text); ``-X <our chain>``; ``-D``/``-I <built-in> 1`` with exactly
    our jump for that chain. One rule per line, printable ASCII only. ``comments``: the header
    lines of a persisted file (``# ...``) are allowed too.
    """
    jumps = our_jumps(prefix)
    table = None
    lines = text.split('\n')
    if lines and lines[-1] == '':
        lines.pop()
    for number, line in enumerate(lines, 1):
        problem = None
        words = line.split(' ', 2)
        chain = words[1] if len(words) > 1 else ''
        if not line.isascii() or not line.isprintable():
            problem = 'it is not printable ASCII'
        elif line.startswith('#'):
            problem = None if comments and table is None else 'a comment'
        elif table is None:
            table = line[1:] if line in ('*nat', '*filter') else None
            problem = None if table else 'expected *nat or *filter'
        elif line == 'COMMIT':
            table = None
        elif words[0] in (':', '-A', '-X') or line.startswith(':'):
            name = line[1:].split(' ')[0] if line.startswith(':') else chain
            if not owned(name, prefix, table):
                problem = 'chain %r is not one of ours in table %s' % (name, table)
            elif line.startswith(':'):
                problem = None if line == ':%s - [0:0]' % name else 'a chain declaration we do not write'
            elif words[0] == '-X':
                problem = None if len(words) == 2 else 'trailing words'
            else:
                problem = _rule_problem(words[2] if len(words) == 3 else '', prefix, table)
        elif words[0] in ('-D', '-I'):
            spec = line.split(' ', 3)[3] if words[0] == '-I' and words[2].startswith('1 ') else \
                (words[2] if words[0] == '-D' and len(words) == 3 else None)
            if spec is None or jumps.get((table, chain)) != spec:
                problem = 'not kvmnet.nat\'s own jump for %s %s' % (table, chain)
        else:
            problem = 'not a line kvmnet.nat writes'
        if problem:
            raise PayloadError('refusing payload line %d (%s): %s' % (number, problem, line[:300]))
    if table is not None:
        raise PayloadError('refusing payload: table %s has no COMMIT' % table)


# ---------------------------------------------------------------- planning

@dataclass
class Plan:
    family: int
    changed: bool
    payload: str                   # iptables-restore --noflush input, '' if nothing to do
    before: list
    after: list
    reasons: list


def _view(jumps, chains):
    """One line per managed item, ordered by table, then jumps (chain, position), then chains."""
    lines = []
    for tname in sorted(set([j[0] for j in jumps] + [c[0] for c in chains])):
        for table, chain, pos, spec in sorted(j for j in jumps if j[0] == tname):
            lines.append('%s %s[%d] %s' % (table, chain, pos, spec))
        for (table, chain), rules in sorted(c for c in chains.items() if c[0][0] == tname):
            lines.append('%s :%s' % (table, chain))
            lines.extend('%s %s %s' % (table, chain, spec) for spec in rules)
    return lines


def managed_view(tables, prefix):
    """The managed rules as they are live: jumps with their position, then our chains."""
    jumps, chains = [], {}
    for tname, table in tables.items():
        for chain, rules in table.rules.items():
            if owned(chain, prefix, tname):
                continue
            jumps.extend((tname, chain, pos, spec) for pos, spec in enumerate(rules, 1)
                         if jumps_into_ours(spec, prefix, tname))
        for chain in table.chains:
            if owned(chain, prefix, tname):
                chains[(tname, chain)] = table.rules.get(chain, [])
    return _view(jumps, chains)


def desired_view(desired):
    """The managed rules as they will be."""
    return _view([(t, c, 1, spec) for t, c, spec in desired.jumps], desired.chains)


def check_ownership(tables, prefix):
    """Refuse our chains holding rules we did not write, and any rule jumping into our chains that is
    not exactly one of our own jumps (render_jumps): an admin's jump is named, never deleted."""
    problems = []
    jumps = our_jumps(prefix)
    for tname, table in tables.items():
        for chain in table.chains:
            if not owned(chain, prefix, tname):
                continue
            foreign = [spec for spec in table.rules.get(chain, []) if not _is_ours(spec)]
            if foreign:
                problems.append('chain %s in table %s exists and holds rules kvmnet.nat did not write '
                                '(first: %s); choose another chain_prefix or remove that chain'
                                % (chain, tname, foreign[0]))
        for chain, rules in table.rules.items():
            if owned(chain, prefix, tname):
                continue
            for spec in rules:
                if jumps_into_ours(spec, prefix, tname) and jumps.get((tname, chain)) != spec:
                    problems.append('rule "-A %s %s" in table %s jumps into a kvmnet.nat chain but is not '
                                    'kvmnet.nat\'s own jump; kvmnet.nat will not manage chains that others '
                                    'jump to: remove that rule, or choose another chain_prefix'
                                    % (chain, spec, tname))
    if problems:
        raise RulesetError('; '.join(problems))


_BLOCK_ORDER = ('declare', 'delete_jumps', 'append', 'delete_chains', 'insert')


class _Payload:
    """The restore payload being planned: per table, its lines in the order iptables-restore needs."""

    def __init__(self):
        self.blocks = {}
        self.reasons = []

    def add(self, table, part, lines, reason=None):
        block = self.blocks.setdefault(table, {key: [] for key in _BLOCK_ORDER})
        block[part].extend(lines)
        if reason:
            self.reasons.append('%s %s' % (table, reason))

    def text(self):
        out = []
        for tname in sorted(self.blocks):
            out.append('*%s' % tname)
            for key in _BLOCK_ORDER:
                out.extend(self.blocks[tname][key])
            out.append('COMMIT')
        return '\n'.join(out) + '\n' if out else ''


def _plan_jumps(tables, desired, payload):
    """Each built-in chain ends with our jump exactly once, at position 1 (or none when absent).

    After check_ownership, every rule jumping into our chains is exactly our jump: copies and a
    misplaced one are deleted by that spec, and it goes back to 1, in the same transaction.
    """
    prefix = desired.prefix
    jumps = our_jumps(prefix)
    wanted = {(t, c) for t, c, _spec in desired.jumps}
    for (tname, chain), spec in jumps.items():
        rules = tables[tname].rules.get(chain, []) if tname in tables else []
        positions = [pos for pos, rule in enumerate(rules, 1) if jumps_into_ours(rule, prefix, tname)]
        want = (tname, chain) in wanted
        if positions == ([1] if want else []):
            continue
        deletes = ['-D %s %s' % (chain, spec)] * len(positions)
        if not want:
            payload.add(tname, 'delete_jumps', deletes, '%s: jump removed' % chain)
        elif not positions:
            payload.add(tname, 'insert', ['-I %s 1 %s' % (chain, spec)], '%s: jump added' % chain)
        else:
            reason = '%s: %d jumps to kvmnet.nat chains, keeping one' % (chain, len(positions)) \
                if len(positions) > 1 else '%s: jump was at position %d, moved back to 1' % (chain, positions[0])
            payload.add(tname, 'delete_jumps', deletes, reason)
            payload.add(tname, 'insert', ['-I %s 1 %s' % (chain, spec)])


def _plan_chains(tables, desired, payload):
    """Chains whose rules differ are declared (which flushes them) and refilled; others are left
    alone. Our chains that are not wanted any more are flushed and deleted."""
    for (tname, chain), rules in desired.chains.items():
        table = tables.get(tname)
        existed = table is not None and chain in table.chains
        if existed and table.rules.get(chain, []) == rules:
            continue
        payload.add(tname, 'declare', [':%s - [0:0]' % chain],
                    '%s: %s' % (chain, 'rules changed' if existed else 'chain created'))
        payload.add(tname, 'append', ['-A %s %s' % (chain, spec) for spec in rules])
    for tname, table in sorted(tables.items()):
        for chain in table.chains:
            if owned(chain, desired.prefix, tname) and (tname, chain) not in desired.chains:
                payload.add(tname, 'declare', [':%s - [0:0]' % chain], '%s: chain removed' % chain)
                payload.add(tname, 'delete_chains', ['-X %s' % chain])


def plan(tables, desired):
    """Compare the live tables with the desired state and build one restore payload.

    Only tables where something differs appear in the payload. In each: changed chains are
    declared (which flushes them), misplaced or duplicate jumps deleted by their exact spec, the
    chains refilled, unwanted chains deleted, and the jumps inserted at position 1. The payload is
    checked against the grammar of what the engine writes before it is returned.
    """
    check_ownership(tables, desired.prefix)
    payload = _Payload()
    _plan_jumps(tables, desired, payload)
    _plan_chains(tables, desired, payload)
    text = payload.text()
    check_payload(text, desired.prefix)
    return Plan(family=desired.family, changed=bool(text), payload=text,
                before=managed_view(tables, desired.prefix), after=desired_view(desired), reasons=payload.reasons)


PERSIST_FORMAT = 2


def persist_text(desired, flavour):
    """The persisted copy: a header kvmnet-nat-restore checks, then the payload that builds the
    managed chains and jumps from nothing (``plan({}, desired)``), and nothing else.

    The header names the iptables flavour the rules were applied with (the restore script uses
    the same) and the SHA-256 of the rest, so a file cut short or edited is refused as a whole.
    """
    body = plan({}, desired).payload
    header = '# Managed by kvmnet.nat: only its own chains (%s_*) and their jumps. Do not edit.\n' % desired.prefix
    meta = '# kvmnet-nat-restore format=%d family=%d flavour=%s prefix=%s sha256=%s\n' % (
        PERSIST_FORMAT, desired.family, flavour, desired.prefix, hashlib.sha256(body.encode('ascii')).hexdigest())
    text = header + meta + body
    check_payload(text, desired.prefix, comments=True)
    return text
