# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The nftables backend, rendering: PRIVATE to this collection, no stable API.

Pure Python, no I/O. From validated forwards (_forward.py) to what our ``table inet kvmnet_nat`` must
hold (a Table: sets, maps, chains, each rule as the one line nft prints for it) and to the one rule we
put at the top of libvirt's ``forward`` chain(s). Every value that reaches the text is made here from a
parsed value (ipaddress objects, ints, names checked against a pattern); nothing is pasted from input.

The table, for each family (``4``: ``ip``/``ipv4_addr``, ``6``: ``ip6``/``ipv6_addr``):

- ``prerouting`` (nat, -100) and ``output`` (nat, -100, only ``fib daddr type local``: host-local access)
  jump to ``dispatch``; ``postrouting`` (nat, 100) masquerades the connections marked MASQ_MARK and
  ACCEPT_MARK.
- Forwards with a public address and no ``in_interface``, the common case, need no rule of their own:
  ``port4`` maps (public address . protocol . port) to (guest address . guest port), one element per
  host port (a shifted range ``10000-10009 -> 20000-20009`` is one element per port: nft 1.0.6 has no
  ``/base`` offset like iptables' ``--to-destination IP:first-last/base``); ``addr4`` maps a range kept as
  it is (``8000-8009 -> 8000-8009``) to the guest address alone (ports unchanged). A forward with
  ``sources`` is the same with the source as the key's last part, one element per source network
  (``srcport4``, ``srcaddr4``). One rule per map marks and DNATs: ``<key> @port4 ct mark set ct mark |
  ACCEPT_MARK dnat ip to <key> map @port4``. ``masq4`` (masquerade ``always``) and, per guest network,
  ``hairpin4_<tag>`` (``auto`` with a guest network, matched with ``ip saddr <network>``) add MASQ_MARK
  before it; postrouting masquerades only connections with both marks (a key marked whose sources did
  not match was no DNAT of ours).
- Every set whose keys may hold a range or a network is split in two: exact keys in a hash set
  (``masq4``), the others in an interval set of the same name with ``_r`` (``masq4_r``), each with its
  rule. nft 1.0.6 loads an interval set of concatenations in time quadratic in its size (8000 elements,
  about a second; a hash set of as many, a few hundredths): 10 000 forwards load in a third of a second.
- Forwards with ``in_interface`` each get a chain of their own (``f_<hash>``) that matches the interface
  and the sources (an anonymous set) and marks and DNATs; ``special4`` (keyed like ``port4``, verdict
  ``jump``), ``iface4`` (inbound interface . protocol . port, for forwards without a public address) and
  one ``wild4_<n>`` per wildcard interface (``eth+``: ``iifname "eth*"``) lead to those chains. Two such
  forwards may share a key only when their interfaces differ: a key's ports are cut into disjoint
  segments, each jumping to one chain holding every forward that covers it.

A new connection walks a fixed number of rules per family in ``dispatch`` (two per set: its hash and
interval halves), plus two per guest network with hairpin forwards and per wildcard interface name,
each an O(1) set lookup (hash, or nft's interval set for a concatenation with a range), then the few
rules of one ``f_`` chain: the number of forwards is never walked. The overlap rule of _forward.py makes
every packet match at most one forward, so the order of these lookups never decides anything (the marks
come before the DNATs, which end the chain).

Conntrack marks: ACCEPT_MARK (0x00200000, bit 21) on every connection one of our forwards DNATs,
MASQ_MARK (0x00400000, bit 22) on those it must masquerade; other bits of the mark are kept
(``ct mark set ct mark | bit``). The one rule ``ct mark & 0x00200000 == 0x00200000 counter accept``
at the top of libvirt's ``forward`` chain (``table ip libvirt_network`` and ``table ip6
libvirt_network``), commented ``kvmnet.nat: accept``, lets exactly those connections pass libvirt's
reject (an accept in our own table would not: another table's reject on the same hook still applies).
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import re
from dataclasses import dataclass, field

from ansible_collections.kvmnet.nat.plugins.module_utils._forward import PROTOCOLS, PortRange, address_text, valid_interface
from ansible_collections.kvmnet.nat.plugins.module_utils._schema import DEFAULT_PREFIX
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables.rules import valid_prefix

ACCEPT_MARK = 0x00200000
MASQ_MARK = 0x00400000
ACCEPT_COMMENT = 'kvmnet.nat: accept'
# both bits: only a connection one of our forwards DNATs is masqueraded (a marked key whose sources do not
# match is not DNATed; it stays the host's own connection)
MASQUERADE_RULE = 'ct mark & 0x%08x == 0x%08x masquerade' % (ACCEPT_MARK | MASQ_MARK, ACCEPT_MARK | MASQ_MARK)
ACCEPT_RULE = 'ct mark & 0x%08x == 0x%08x counter accept comment "%s"' % (ACCEPT_MARK, ACCEPT_MARK, ACCEPT_COMMENT)
LIBVIRT_TABLE = 'libvirt_network'
LIBVIRT_CHAIN = 'forward'
LIBVIRT_FAMILIES = (('ip', 4), ('ip6', 6))      # libvirt's tables, in this order
BASE_CHAINS = {
    'prerouting': 'type nat hook prerouting priority -100; policy accept;',
    'output': 'type nat hook output priority -100; policy accept;',
    'postrouting': 'type nat hook postrouting priority 100; policy accept;',
}
DISPATCH = 'dispatch'

_TABLE_RE = re.compile(r'kvmnet_nat(?:_[a-z][a-z0-9]{0,15})?', re.ASCII)
_COMMENT_RE = re.compile(r'[A-Za-z0-9 ._+:@/>-]{1,120}', re.ASCII)
_IFACE_RE = re.compile(r'[A-Za-z0-9_.@-]{1,15}\*?', re.ASCII)
_FAMILY = {4: ('ip', 'ipv4_addr', 'ipv4'), 6: ('ip6', 'ipv6_addr', 'ipv6')}
KEY = 'meta l4proto . th dport'
L4_MATCH = 'meta l4proto { tcp, udp, sctp }'


def table_name(prefix=DEFAULT_PREFIX):
    """Our table's name, from the chain prefix: ``KVMNAT`` (the default) -> ``kvmnet_nat``, any other
    valid prefix P -> ``kvmnet_nat_`` + P in lower case (``TEST1`` -> ``kvmnet_nat_test1``). Every name
    we use starts with ``kvmnet_nat``; ValueError for a prefix iptables' backend would refuse too."""
    if not valid_prefix(prefix):
        raise ValueError('chain_prefix %r must be 1-16 upper-case letters or digits, starting with a letter'
                         % (prefix,))
    return 'kvmnet_nat' if prefix == DEFAULT_PREFIX else 'kvmnet_nat_' + prefix.lower()


def valid_table(name):
    return isinstance(name, str) and bool(_TABLE_RE.fullmatch(name))


def comment(text):
    """A rule comment, from a safe character set only (no quote, no backslash, no newline, no ``;``)."""
    if not isinstance(text, str) or not _COMMENT_RE.fullmatch(text):
        raise ValueError('refusing to write the comment %r' % (text,))
    return 'comment "%s"' % text


def iface(name):
    """An inbound interface as nft matches it, quoted: iptables' trailing ``+`` wildcard is nft's ``*``."""
    if not valid_interface(name):
        raise ValueError('refusing to write the interface name %r' % (name,))
    text = name[:-1] + '*' if name.endswith('+') else name
    if not _IFACE_RE.fullmatch(text):
        raise ValueError('refusing to write the interface name %r' % (name,))
    return '"%s"' % text


@functools.lru_cache(maxsize=65536)
def addr(ip):
    """An address, made anew from its parsed value (once per distinct address: 10 000 forwards name a few
    hundred)."""
    return address_text(ipaddress.ip_address(ip.packed))


@functools.lru_cache(maxsize=65536)
def net(network):
    """A network as nft prints it: the bare address for a /32 or /128 (once per distinct network)."""
    network = ipaddress.ip_network((network.network_address.packed, network.prefixlen))
    if network.prefixlen == network.max_prefixlen:
        return address_text(network.network_address)
    return '%s/%d' % (address_text(network.network_address), network.prefixlen)


def ports(value):
    if not (isinstance(value, PortRange) and 1 <= value.first <= value.last <= 65535):
        raise ValueError('refusing to write the ports %r' % (value,))
    return '%d' % value.first if value.first == value.last else '%d-%d' % (value.first, value.last)


def proto(name):
    if name not in PROTOCOLS:
        raise ValueError('refusing to write the protocol %r' % (name,))
    return name


def mark(bits):
    return 'ct mark set ct mark | 0x%08x' % bits

# ---------------------------------------------------------------- the model


@dataclass(frozen=True)
class NftSet:
    """A named set or map: ``key`` and ``data`` are nft type names, ``elements`` their texts, sorted."""
    kind: str                   # 'set' or 'map'
    key: tuple
    data: tuple = ()
    interval: bool = False
    elements: tuple = ()

    @property
    def type_text(self):
        text = ' . '.join(self.key)
        return text + ' : ' + ' . '.join(self.data) if self.data else text


@dataclass(frozen=True)
class Chain:
    base: str = ''              # BASE_CHAINS' text for a base chain, '' for a regular one
    rules: tuple = ()


@dataclass
class Table:
    """The content of one ``table inet``, canonical: rendered from forwards, or read from nft's JSON."""
    name: str
    sets: dict = field(default_factory=dict)       # name -> NftSet
    chains: dict = field(default_factory=dict)     # name -> Chain
    others: tuple = ()                             # lines for what a live table holds that we never write

    def lines(self):
        """One line per item, the view that plan() compares and the diff shows."""
        out = ['table inet %s' % self.name]
        for name in sorted(self.sets):
            found = self.sets[name]
            out.append('%s %s type %s%s' % (found.kind, name, found.type_text, ' flags interval' if found.interval else ''))
            out.extend('%s %s element %s' % (found.kind, name, element) for element in found.elements)
        for name in sorted(self.chains):
            chain = self.chains[name]
            out.append('chain %s%s' % (name, ' ' + chain.base if chain.base else ''))
            out.extend('chain %s rule %s' % (name, rule) for rule in chain.rules)
        return out + list(self.others)

    def script(self):
        """``table inet <name> { ... }``: what nft -f loads (base chains last: they refer to the others)."""
        out = ['table inet %s {' % self.name]
        for name in sorted(self.sets):
            found = self.sets[name]
            out.append('\t%s %s {' % (found.kind, name))
            out.append('\t\ttype %s' % found.type_text)
            if found.interval:
                out.append('\t\tflags interval')
            if found.elements:
                out.append('\t\telements = { %s }' % ',\n\t\t\t     '.join(found.elements))
            out.append('\t}')
        for name in sorted(self.chains, key=lambda n: (bool(self.chains[n].base), n)):
            chain = self.chains[name]
            out.append('\tchain %s {' % name)
            if chain.base:
                out.append('\t\t' + chain.base)
            out.extend('\t\t' + rule for rule in chain.rules)
            out.append('\t}')
        out.append('}')
        return '\n'.join(out) + '\n'


@dataclass
class Desired:
    """What the nftables backend must hold: our table (None: no table at all) and, when there is one,
    ACCEPT_RULE first in every libvirt ``forward`` chain that exists."""
    prefix: str = DEFAULT_PREFIX
    table: Table = None
    forwards: int = 0

    @property
    def name(self):
        return table_name(self.prefix)

    @property
    def empty(self):
        return self.table is None

    @property
    def accept(self):
        return None if self.table is None else ACCEPT_RULE

# ---------------------------------------------------------------- per forward


def _dnat(fwd):
    family = 'ip' if fwd.family == 4 else 'ip6'
    guest = addr(fwd.guest_ip)
    host = guest if fwd.family == 4 else '[%s]' % guest
    gp, hp = fwd.guest_ports, fwd.host_ports
    if gp.size == 1:
        return 'dnat %s to %s:%d' % (family, host, gp.first)
    if gp == hp:
        return 'dnat %s to %s' % (family, guest)
    pairs = ', '.join('%d : %d' % (hp.first + i, gp.first + i) for i in range(hp.size))
    return 'dnat %s to %s:%s dport map { %s }' % (family, host, proto(fwd.proto), pairs)


def _sources(fwd):
    texts = _sources_list(fwd)
    return texts[0] if len(texts) == 1 else '{ %s }' % ', '.join(texts)


def forward_rules(fwd):
    """The rules of a forward that needs its own chain: match interface and sources, mark, DNAT."""
    family = _FAMILY[fwd.family][0]
    parts = []
    if fwd.in_interface:
        parts.append('iifname %s' % iface(fwd.in_interface))
    parts.append('meta l4proto %s' % proto(fwd.proto))
    if fwd.sources:
        parts.append('%s saddr %s' % (family, _sources(fwd)))
    rules = []
    if fwd.masquerade == 'auto' and fwd.guest_network is not None:
        rules.append(' '.join(parts + ['%s saddr %s' % (family, net(fwd.guest_network)),
                                       mark(ACCEPT_MARK | MASQ_MARK), _dnat(fwd), comment(fwd.label + ' hairpin')]))
    bits = ACCEPT_MARK | (MASQ_MARK if fwd.masquerade == 'always' else 0)
    rules.append(' '.join(parts + [mark(bits), _dnat(fwd), comment(fwd.label)]))
    return rules


def in_maps(fwd):
    """A forward without a chain of its own: a public address and no inbound interface (sources or not)."""
    return fwd.public_ip is not None and not fwd.in_interface


def _ranged(element):
    """Whether an element's key holds a port range or a network: it needs an interval set. Exact keys go
    to a hash set instead (nft 1.0.6 loads an interval set of concatenations in time quadratic in its
    size: 8000 elements take a second; a hash set of as many, a few hundredths)."""
    return any(part[:1] != '"' and ('-' in part or '/' in part) for part in element.split(' : ', 1)[0].split(' . '))


def net_tag(network):
    """A network's part of a set name (``hairpin4_<tag>``), unique by construction: the hex digits of its
    network bits, then its prefix length (``192.168.122.0/24`` -> ``c0a87a_24``; at most 32 digits)."""
    network = ipaddress.ip_network((network.network_address.packed, network.prefixlen))
    digits = max(1, (network.prefixlen + 3) // 4)
    return '%0*x_%d' % (digits, int(network.network_address) >> (network.max_prefixlen - 4 * digits), network.prefixlen)


def _sources_list(fwd):
    return [net(n) for n in sorted(ipaddress.collapse_addresses(fwd.sources), key=lambda n: (n.network_address, n.prefixlen))]


def _map_elements(fwd, sets, nets):
    """The elements a forward without a chain adds to its family's maps and sets: the DNAT map (``port``
    or ``addr``; ``srcport``/``srcaddr`` with the source as the key's last part, one element per source
    network), ``masq`` (masquerade ``always``) or its guest network's ``hairpin<n>_<tag>`` (``auto``; ``nets``
    gets that set's network)."""
    n = fwd.family
    key = '%s . %s' % (addr(fwd.public_ip), proto(fwd.proto))
    hp, gp = fwd.host_ports, fwd.guest_ports
    guest = addr(fwd.guest_ip)
    prefix = 'src' if fwd.sources else ''
    for tail in [' . ' + s for s in _sources_list(fwd)] if fwd.sources else ['']:
        if gp.size == 1:
            sets['%sport%d' % (prefix, n)].append('%s . %d%s : %s . %d' % (key, hp.first, tail, guest, gp.first))
        elif gp == hp:
            sets['%saddr%d' % (prefix, n)].append('%s . %s%s : %s' % (key, ports(hp), tail, guest))
        else:
            sets['%sport%d' % (prefix, n)].extend('%s . %d%s : %s . %d' % (key, hp.first + i, tail, guest, gp.first + i)
                                                  for i in range(hp.size))
    if fwd.masquerade == 'always':
        sets['masq%d' % n].append('%s . %s' % (key, ports(hp)))
    elif fwd.masquerade == 'auto' and fwd.guest_network is not None:
        name = 'hairpin%d_%s' % (n, net_tag(fwd.guest_network))
        nets[name] = net(fwd.guest_network)
        sets.setdefault(name, []).append('%s . %s' % (key, ports(hp)))


def segments(items):
    """[(PortRange, member)] -> [(PortRange, (members covering it, in input order))], disjoint, sorted.

    One sweep over the range boundaries: ranges that overlap are cut where one starts or ends."""
    points = sorted({p for ports_, _m in items for p in (ports_.first, ports_.last + 1)})
    starts = {}
    for index, (ports_, _member) in enumerate(items):
        starts.setdefault(ports_.first, []).append(index)
    active, out = set(), []
    for here, following in zip(points, points[1:]):
        active.update(starts.get(here, ()))
        active = {i for i in active if items[i][0].last >= here}
        if active:
            out.append((PortRange(here, following - 1), tuple(items[i][1] for i in sorted(active))))
    return out


def _dispatch_key(fwd):
    """(map name, key prefix text, interface wildcard or None) of a forward with a chain of its own."""
    n = fwd.family
    if fwd.public_ip is not None:
        return 'special%d' % n, addr(fwd.public_ip), None
    name = iface(fwd.in_interface)
    if name.endswith('*"'):
        return 'wild%d' % n, None, name
    return 'iface%d' % n, name, None


def _special(forwards, table):
    """Chains and dispatch maps of the forwards that need a chain of their own; the wildcard names."""
    groups = {}
    for fwd in forwards:
        if not in_maps(fwd):
            groups.setdefault(_dispatch_key(fwd) + (fwd.proto,), []).append(fwd)
    maps, wild = {}, {}
    for (name, prefix, wildcard, proto_), members in sorted(groups.items(), key=lambda g: repr(g[0])):
        if wildcard is not None:
            name = wild.setdefault((name, wildcard), '%s_%d' % (name, len(wild) + 1))
        for span, covering in segments([(f.host_ports, f) for f in members]):
            rules = tuple(rule for f in sorted(covering, key=lambda f: f.sort_key) for rule in forward_rules(f))
            chain = 'f_%s' % hashlib.sha256('\n'.join(rules).encode('ascii')).hexdigest()[:16]
            table.chains[chain] = Chain(rules=rules)
            key = ' . '.join(p for p in (prefix, proto(proto_), ports(span)) if p is not None)
            maps.setdefault(name, []).append('%s : jump %s' % (key, chain))
    return maps, wild


def _set(kind, key, data, elements, interval):
    return NftSet(kind, key, data, interval, tuple(sorted(set(elements))))


def _split(table, name, kind, key, data, elements, rule):
    """``elements`` in a hash set ``name`` (exact keys) and an interval set ``name_r`` (ranges, networks),
    each that has any with its rule (``rule(set name)``); the rules, in that order."""
    rules, halves = [], ([], [])
    for element in elements:
        halves[_ranged(element)].append(element)
    for suffix, part, interval in (('', halves[0], False), ('_r', halves[1], True)):
        if part:
            table.sets[name + suffix] = _set(kind, key, data, part, interval)
            rules.append(rule(name + suffix))
    return rules


def _dispatch_rules(n, table, elements, nets, special, wild):
    """The rules of ``dispatch`` for family ``n`` and its sets, added to ``table``: first the verdict map
    of chains, then the marks (masquerade), then the DNAT maps (a DNAT ends the chain), then the maps of
    forwards without a public address."""
    family, addr_type, nfproto = _FAMILY[n]
    key_types = (addr_type, 'inet_proto', 'inet_service')
    dkey = '%s daddr . %s' % (family, KEY)
    skey = '%s . %s saddr' % (dkey, family)
    rules = []
    if special.get('special%d' % n):
        rules += _split(table, 'special%d' % n, 'map', key_types, ('verdict',), special['special%d' % n],
                        lambda s: '%s vmap @%s' % (dkey, s))
    for name in sorted(k for k in nets if k.startswith('hairpin%d_' % n)):
        rules += _split(table, name, 'set', key_types, (), elements[name],
                        lambda s, net_=nets[name]: '%s saddr %s %s @%s %s' % (family, net_, dkey, s, mark(MASQ_MARK)))
    rules += _split(table, 'masq%d' % n, 'set', key_types, (), elements['masq%d' % n],
                    lambda s: '%s @%s %s' % (dkey, s, mark(MASQ_MARK)))
    for name, key, data in (('port%d' % n, dkey, (addr_type, 'inet_service')), ('addr%d' % n, dkey, (addr_type,)),
                            ('srcport%d' % n, skey, (addr_type, 'inet_service')), ('srcaddr%d' % n, skey, (addr_type,))):
        types = key_types + ((addr_type,) if key == skey else ())

        def dnat(s, key=key, name=name):
            # nft 1.0.6 takes a port from an interval map of this key only after a transport protocol match
            match = L4_MATCH + ' ' if name.startswith('srcport') else ''
            return '%s%s @%s %s dnat %s to %s map @%s' % (match, key, s, mark(ACCEPT_MARK), family, key, s)
        if 'port' in name:          # single ports: exact unless a source is a network
            rules += _split(table, name, 'map', types, data, elements[name], dnat)
        elif elements[name]:        # a range kept as it is: always an interval
            table.sets[name] = _set('map', types, data, elements[name], True)
            rules.append(dnat(name))
    if special.get('iface%d' % n):
        rules += _split(table, 'iface%d' % n, 'map', ('ifname', 'inet_proto', 'inet_service'), ('verdict',),
                        special['iface%d' % n], lambda s: 'meta nfproto %s iifname . %s vmap @%s' % (nfproto, KEY, s))
    for (kind, wildcard), name in sorted(wild.items(), key=lambda w: w[1]):
        if kind == 'wild%d' % n:
            rules += _split(table, name, 'map', ('inet_proto', 'inet_service'), ('verdict',), special[name],
                            lambda s, w=wildcard: 'meta nfproto %s iifname %s %s vmap @%s' % (nfproto, w, KEY, s))
    return rules


def desired_state(forwards, prefix=DEFAULT_PREFIX):
    """Our table for every forward of both families; no forwards -> no table (and no accept rule)."""
    state = Desired(prefix=prefix, forwards=len(forwards))
    name = table_name(prefix)
    if not forwards:
        return state
    table = Table(name)
    elements = {'%s%d' % (kind, n): [] for kind in ('port', 'addr', 'srcport', 'srcaddr', 'masq') for n in (4, 6)}
    nets = {}
    for fwd in forwards:
        if in_maps(fwd):
            _map_elements(fwd, elements, nets)
    special, wild = _special(forwards, table)
    dispatch = [rule for n in (4, 6) for rule in _dispatch_rules(n, table, elements, nets, special, wild)]
    table.chains[DISPATCH] = Chain(rules=tuple(dispatch))
    table.chains['prerouting'] = Chain(BASE_CHAINS['prerouting'], ('jump %s' % DISPATCH,))
    table.chains['output'] = Chain(BASE_CHAINS['output'], ('fib daddr type local jump %s' % DISPATCH,))
    masq = any(f.masquerade == 'always' or (f.masquerade == 'auto' and f.guest_network is not None) for f in forwards)
    table.chains['postrouting'] = Chain(BASE_CHAINS['postrouting'], (MASQUERADE_RULE,) if masq else ())
    state.table = table
    return state
