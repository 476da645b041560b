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

import ipaddress
import re
import shlex
from dataclasses import dataclass, field

OWNER_TAG = 'kvmnet.nat'
PROTOCOLS = ('tcp', 'udp', 'sctp')
MASQUERADE_MODES = ('auto', 'always', 'never')
FAMILIES = (4, 6)
DEFAULT_PREFIX = 'KVMNAT'

_GUEST_NAME_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._+:@-]{0,63}$')
_IFACE_RE = re.compile(r'^[A-Za-z0-9_.:@-]{1,15}\+?$')
_PREFIX_RE = re.compile(r'^[A-Z][A-Z0-9]{0,15}$')
_PORT_RE = re.compile(r'^\s*(\d+)\s*(?:[-:]\s*(\d+)\s*)?$')


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
    return bool(prefix) and bool(_PREFIX_RE.match(prefix))


def chain_names(prefix=DEFAULT_PREFIX):
    """The chains the engine owns, by role."""
    return {'dnat': prefix + '_DNAT', 'snat': prefix + '_SNAT', 'fwd': prefix + '_FWD'}


# ---------------------------------------------------------------- validation

def _label(raw, index):
    guest = raw.get('guest') or '<forward #%d>' % (index + 1)
    return '%s %s/%s' % (guest, raw.get('proto') or 'tcp', raw.get('host_port'))


def _parse_ip(value):
    return ipaddress.ip_address(str(value).strip())


def parse_ports(value):
    """``8080``, ``"8080"`` or ``"10000-10009"`` (``:`` accepted too) -> PortRange."""
    if isinstance(value, bool):
        raise ValueError('port %r is not a number' % (value,))
    if isinstance(value, int):
        first = last = value
    else:
        m = _PORT_RE.match(str(value))
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


def _parse_network(value, what):
    try:
        net = ipaddress.ip_network(str(value).strip(), strict=True)
    except ValueError as exc:
        loose = None
        try:
            loose = ipaddress.ip_network(str(value).strip(), strict=False)
        except ValueError:
            pass
        if loose is not None:
            raise ValueError('%s %s has host bits set (did you mean %s?)' % (what, value, loose))
        raise ValueError('%s %r is not an IP address or CIDR: %s' % (what, value, exc))
    return net


def parse_forwards(raw_forwards, public_ip=None, public_ip6=None, in_interface=None):
    """Validate raw forwards (dicts as the module receives them) into Forward objects.

    Every problem is collected, so one run tells the admin everything that is wrong;
    nothing is applied unless the whole set is valid.
    """
    errors = []
    defaults = {}
    for key, value in (('public_ip', public_ip), ('public_ip6', public_ip6)):
        if value in (None, ''):
            continue
        try:
            addr = _parse_ip(value)
        except ValueError:
            errors.append('%s %r is not an IP address' % (key, value))
            continue
        want = 4 if key == 'public_ip' else 6
        if addr.version != want:
            errors.append('%s %s is not an IPv%d address' % (key, value, want))
            continue
        defaults[want] = addr
    if in_interface not in (None, '') and not _IFACE_RE.match(in_interface):
        errors.append('in_interface %r is not an interface name' % (in_interface,))

    forwards = []
    for index, raw in enumerate(raw_forwards or []):
        label = _label(raw, index)
        problems = []
        guest = raw.get('guest')
        if not guest or not _GUEST_NAME_RE.match(str(guest)):
            problems.append('guest name %r must be 1-64 characters of letters, digits and ._+:@-'
                            % (guest,))
        proto = str(raw.get('proto') or 'tcp').lower()
        if proto not in PROTOCOLS:
            problems.append('unknown proto %r (use one of %s)' % (raw.get('proto'), ', '.join(PROTOCOLS)))
        try:
            guest_ip = _parse_ip(raw.get('guest_ip'))
        except ValueError:
            guest_ip = None
            problems.append('guest_ip %r is not an IP address' % (raw.get('guest_ip'),))
        host_ports = guest_ports = None
        try:
            host_ports = parse_ports(raw.get('host_port'))
        except ValueError as exc:
            problems.append('host_port: %s' % exc)
        guest_raw = raw.get('guest_port')
        try:
            guest_ports = parse_ports(raw.get('host_port') if guest_raw in (None, '') else guest_raw)
        except ValueError as exc:
            if guest_raw not in (None, ''):
                problems.append('guest_port: %s' % exc)
        if host_ports and guest_ports and host_ports.size != guest_ports.size:
            problems.append('host range %s has %d ports but guest range %s has %d'
                            % (host_ports, host_ports.size, guest_ports, guest_ports.size))
        masquerade = str(raw.get('masquerade') or 'auto')
        if masquerade not in MASQUERADE_MODES:
            problems.append('masquerade %r must be one of %s' % (masquerade, ', '.join(MASQUERADE_MODES)))
        iface = raw.get('in_interface') or in_interface or None
        if raw.get('in_interface') and not _IFACE_RE.match(raw['in_interface']):
            problems.append('in_interface %r is not an interface name' % (raw['in_interface'],))
        sources = []
        for src in raw.get('sources') or []:
            try:
                sources.append(_parse_network(src, 'source'))
            except ValueError as exc:
                problems.append(str(exc))
        guest_network = None
        if raw.get('guest_network'):
            try:
                guest_network = _parse_network(raw['guest_network'], 'guest_network')
            except ValueError as exc:
                problems.append(str(exc))
        pub = None
        if raw.get('public_ip'):
            try:
                pub = _parse_ip(raw['public_ip'])
            except ValueError:
                problems.append('public_ip %r is not an IP address' % (raw['public_ip'],))
        if guest_ip is not None:
            family = guest_ip.version
            if pub is None and not raw.get('public_ip'):
                pub = defaults.get(family)
            if pub is not None and pub.version != family:
                problems.append('public_ip %s and guest_ip %s are of different IP versions' % (pub, guest_ip))
            if pub is None and not iface and not raw.get('public_ip'):
                problems.append('no public_ip%s and no in_interface: an unscoped DNAT would also catch '
                                'traffic to the host\'s own services' % ('6' if family == 6 else ''))
            if pub is not None and pub == guest_ip:
                problems.append('guest_ip %s is the public ip' % guest_ip)
            for src in sources:
                if src.version != family:
                    problems.append('source %s is not IPv%d like guest_ip %s' % (src, family, guest_ip))
            if guest_network is not None:
                if guest_network.version != family or guest_ip not in guest_network:
                    problems.append('guest_network %s does not contain guest_ip %s' % (guest_network, guest_ip))
            if guest_ip.is_unspecified or guest_ip.is_multicast or guest_ip.is_loopback:
                problems.append('guest_ip %s cannot be a forward target' % guest_ip)
        if problems:
            errors.extend('forward %s: %s' % (label, p) for p in problems)
            continue
        forwards.append(Forward(
            guest=str(guest), guest_ip=guest_ip, proto=proto, host_ports=host_ports,
            guest_ports=guest_ports, public_ip=pub, in_interface=iface,
            sources=tuple(sorted(set(sources), key=str)), masquerade=masquerade,
            guest_network=guest_network, allow_in_use=bool(raw.get('allow_in_use')),
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
    return '%s/%d' % (ip, 32 if ip.version == 4 else 128)


def _net(net):
    return '%s/%d' % (net.network_address, net.prefixlen)


def _to_destination(fwd):
    host = str(fwd.guest_ip) if fwd.family == 4 else '[%s]' % fwd.guest_ip
    gp, hp = fwd.guest_ports, fwd.host_ports
    if gp.size > 1 and gp == hp:
        return str(fwd.guest_ip)  # ports kept as they are
    if gp.size == 1:
        return '%s:%d' % (host, gp.first)
    return '%s:%d-%d/%d' % (host, gp.first, gp.last, hp.first)


def _comment(text):
    return '-m comment --comment "%s: %s"' % (OWNER_TAG, text)


def _origin_match(fwd):
    """conntrack match: the connection was DNATed by this very forward."""
    parts = ['-m conntrack --ctstate DNAT']
    if fwd.public_ip is not None:
        parts.append('--ctorigdst %s' % fwd.public_ip)
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
        origin = '--ctorigdst %s' % public_ip
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
        return str(value.network_address) if value.prefixlen == value.max_prefixlen else _net(value)
    return str(value)


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
    """

    def __init__(self, chains, table, chain, node_match):
        self.chains, self.table, self.base = chains, table, chain
        self.node_match = node_match   # (proto, PortRange, top) -> match text of a dispatch rule
        self.count = 0

    def rules(self, items):
        """items: [(proto, PortRange, spec)] in chain order -> the rules of the top chain."""
        out = []
        for proto in PROTOCOLS:
            group = [(ports, spec) for p, ports, spec in items if p == proto]
            out.extend(self._node(proto, group, top=True))
        return out

    def _node(self, proto, group, top=False):
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
        low_rule = '%s %s -g %s' % (self.node_match(proto, low_ports, top), _comment('%s/%s' % (proto, low_ports)),
                                    self.chain(self._node(proto, low)))
        # below the top, a packet that gets here has a port of this node and not of the lower half
        high_match = self.node_match(proto, high_ports, top) + ' ' if top else ''
        high_rule = '%s%s -g %s' % (high_match, _comment('%s/%s' % (proto, high_ports)),
                                    self.chain(self._node(proto, high)))
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
    for network, group in groups.items():
        if network is None or len(group) <= LEAF_RULES:
            out.extend(dispatch.rules(group))
        else:
            out.append('-s %s %s -j %s' % (_net(network), _comment('hairpin from %s' % _net(network)),
                                           dispatch.chain(dispatch.rules(group))))
    return out


def desired_state(forwards, family, prefix=DEFAULT_PREFIX, present=True):
    """What the managed chains of one family must hold. No forwards -> nothing at all."""
    mine = [f for f in forwards if f.family == family] if present else []
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


def owned(chain, prefix):
    return chain.startswith(prefix + '_')


def jumps_into_ours(spec, prefix):
    """True if the rule jumps (or goes) to one of our chains."""
    return owned(_targets(spec) or '', prefix)


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
            if owned(chain, prefix):
                continue
            jumps.extend((tname, chain, pos, spec) for pos, spec in enumerate(rules, 1)
                         if jumps_into_ours(spec, prefix))
        for chain in table.chains:
            if owned(chain, prefix):
                chains[(tname, chain)] = table.rules.get(chain, [])
    return _view(jumps, chains)


def desired_view(desired):
    """The managed rules as they will be."""
    return _view([(t, c, 1, spec) for t, c, spec in desired.jumps], desired.chains)


def check_ownership(tables, prefix):
    """Refuse chains named like ours that hold rules we did not write, or references from outside."""
    problems = []
    expected_sources = {('nat', 'PREROUTING'), ('nat', 'OUTPUT'), ('nat', 'POSTROUTING'), ('filter', 'FORWARD')}
    for tname, table in tables.items():
        for chain in table.chains:
            if not owned(chain, prefix):
                continue
            foreign = [spec for spec in table.rules.get(chain, []) if not _is_ours(spec)]
            if foreign:
                problems.append('chain %s in table %s exists and holds rules kvmnet.nat did not write '
                                '(first: %s); choose another chain_prefix or remove that chain'
                                % (chain, tname, foreign[0]))
        for chain, rules in table.rules.items():
            if owned(chain, prefix) or (tname, chain) in expected_sources:
                continue
            for spec in rules:
                if jumps_into_ours(spec, prefix):
                    problems.append('rule "-A %s %s" in table %s jumps into a kvmnet.nat chain; '
                                    'kvmnet.nat will not manage a chain that others jump to'
                                    % (chain, spec, tname))
    if problems:
        raise RulesetError('; '.join(problems))


def plan(tables, desired):
    """Compare the live tables with the desired state and build one restore payload.

    Only tables where something differs appear in the payload. In each:
    misplaced or duplicate jumps are deleted by their exact saved spec, changed
    chains are declared (which flushes them) and refilled, unwanted chains are
    flushed and deleted, and the jumps go back to position 1.
    """
    prefix = desired.prefix
    check_ownership(tables, prefix)
    reasons = []
    blocks = {}

    def block(tname):
        return blocks.setdefault(tname, {'declare': [], 'delete_jumps': [], 'append': [],
                                         'delete_chains': [], 'insert': []})

    want_jumps = {}
    for table, builtin, spec in desired.jumps:
        want_jumps[(table, builtin)] = spec

    # jumps in built-in chains
    for tname, table in tables.items():
        for chain, rules in table.rules.items():
            if owned(chain, prefix):
                continue
            ours = [(pos, spec) for pos, spec in enumerate(rules, 1) if jumps_into_ours(spec, prefix)]
            want = want_jumps.get((tname, chain))
            if want is not None and ours == [(1, want)]:
                continue
            if not ours:
                continue
            b = block(tname)
            for pos, spec in ours:
                b['delete_jumps'].append('-D %s %s' % (chain, spec))
            if want is not None:
                if len(ours) > 1:
                    reasons.append('%s %s: %d jumps to kvmnet.nat chains, keeping one' % (tname, chain, len(ours)))
                elif ours[0][0] != 1:
                    reasons.append('%s %s: jump was at position %d, moved back to 1' % (tname, chain, ours[0][0]))
                else:
                    reasons.append('%s %s: jump changed' % (tname, chain))
                b['insert'].append('-I %s 1 %s' % (chain, want))
            else:
                reasons.append('%s %s: jump removed' % (tname, chain))
    for (tname, chain), spec in want_jumps.items():
        table = tables.get(tname)
        present = table is not None and any(
            jumps_into_ours(s, prefix) for s in table.rules.get(chain, []))
        if not present:
            block(tname)['insert'].append('-I %s 1 %s' % (chain, spec))
            reasons.append('%s %s: jump added' % (tname, chain))

    # owned chains
    for (tname, chain), rules in desired.chains.items():
        table = tables.get(tname)
        if table is not None and chain in table.chains and table.rules.get(chain, []) == rules:
            continue
        b = block(tname)
        b['declare'].append(':%s - [0:0]' % chain)
        b['append'].extend('-A %s %s' % (chain, spec) for spec in rules)
        existed = table is not None and chain in table.chains
        reasons.append('%s %s: %s' % (tname, chain, 'rules changed' if existed else 'chain created'))
    for tname, table in tables.items():
        for chain in table.chains:
            if owned(chain, prefix) and (tname, chain) not in desired.chains:
                b = block(tname)
                b['declare'].append(':%s - [0:0]' % chain)
                b['delete_chains'].append('-X %s' % chain)
                reasons.append('%s %s: chain removed' % (tname, chain))

    out = []
    for tname in sorted(blocks):
        b = blocks[tname]
        out.append('*%s' % tname)
        for key in ('declare', 'delete_jumps', 'append', 'delete_chains', 'insert'):
            out.extend(b[key])
        out.append('COMMIT')
    payload = '\n'.join(out) + '\n' if out else ''
    return Plan(family=desired.family, changed=bool(out), payload=payload,
                before=managed_view(tables, prefix), after=desired_view(desired), reasons=reasons)


def persist_text(desired):
    """A restore file holding only the managed chains and jumps (for ``--noflush`` at boot)."""
    header = ['# Managed by kvmnet.nat: only its own chains (%s_*) and their jumps.' % desired.prefix,
              '# Restore with iptables-restore --noflush after removing old jumps; do not edit.']
    if desired.empty:
        return '\n'.join(header) + '\n'
    tables = sorted(set([t for t, _c in desired.chains] + [j[0] for j in desired.jumps]))
    out = list(header)
    for tname in tables:
        out.append('*%s' % tname)
        for (t, chain) in sorted(desired.chains):
            if t == tname:
                out.append(':%s - [0:0]' % chain)
        for (t, chain), rules in sorted(desired.chains.items()):
            if t == tname:
                out.extend('-A %s %s' % (chain, spec) for spec in rules)
        for t, builtin, spec in desired.jumps:
            if t == tname:
                out.append('-I %s 1 %s' % (builtin, spec))
        out.append('COMMIT')
    return '\n'.join(out) + '\n'
