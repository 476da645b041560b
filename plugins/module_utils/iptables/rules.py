# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The iptables backend, rendering: PRIVATE to this collection, no stable API.

Pure Python, no I/O. From validated forwards (_forward.py) to what the chains the collection owns
must hold (Desired): the DNAT, FORWARD accept and MASQUERADE rules of each forward, the established
accepts, the dispatch tree by port, and the one jump per built-in chain. Also what makes a chain or
a rule ours (``owned``, ``is_ours``). Next: plan.py.

The *managed* rules are the rules in the chains we own (``<prefix>_DNAT``, ``_SNAT``, ``_FWD`` and
their numbered sub-chains) and the one jump per built-in chain that leads into them.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from ansible_collections.kvmnet.nat.plugins.module_utils._forward import PROTOCOLS, PortRange, address_text
from ansible_collections.kvmnet.nat.plugins.module_utils._schema import DEFAULT_PREFIX

OWNER_TAG = 'kvmnet.nat'
_PREFIX_RE = re.compile(r'[A-Z][A-Z0-9]{0,15}', re.ASCII)


def valid_prefix(prefix):
    return isinstance(prefix, str) and bool(_PREFIX_RE.fullmatch(prefix))


def chain_names(prefix=DEFAULT_PREFIX):
    """The chains the engine owns, by role."""
    return {'dnat': prefix + '_DNAT', 'snat': prefix + '_SNAT', 'fwd': prefix + '_FWD'}

# ---------------------------------------------------------------- rendering


def _addr(ip):
    """An address as iptables-save prints a -s/-d match."""
    return '%s/%d' % (address_text(ip), 32 if ip.version == 4 else 128)


def net_text(net):
    """A network as iptables-save prints a -s/-d match."""
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
            parts.append('-s %s' % net_text(src))
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
        origin = '! --ctorigdst %s' % ct_text(guest_side)
    return ' '.join([
        '-m conntrack --ctstate RELATED,ESTABLISHED',
        origin,
        '--ctreplsrc %s' % ct_text(guest_side),
        _comment('%s established' % name),
        '-j ACCEPT',
    ])


def ct_text(value):
    """An address or network as iptables-save prints a conntrack address match (no /32 or /128)."""
    if isinstance(value, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return address_text(value.network_address) if value.prefixlen == value.max_prefixlen else net_text(value)
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
            scope = ('network %s' % net_text(f.guest_network), f.guest_network, f.public_ip)
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
        parts.append('-s %s' % net_text(fwd.guest_network))
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
            out.append('-s %s %s -j %s' % (net_text(network), _comment('hairpin from %s' % net_text(network)),
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


def owned(chain, prefix, table):
    """Our chains: exactly <prefix>_DNAT and _SNAT in nat, <prefix>_FWD in filter, and their
    numbered sub-chains. A chain of another name, or of our name in another table, is not ours."""
    m = re.fullmatch(r'%s_(DNAT|SNAT|FWD)(?:_[1-9][0-9]{0,5})?' % re.escape(prefix), chain, re.ASCII)
    return bool(m) and table == ('filter' if m.group(1) == 'FWD' else 'nat')


def our_jumps(prefix):
    """{(table, built-in chain): the one jump spec kvmnet.nat puts there} (from render_jumps)."""
    return {(table, chain): spec for table, chain, spec in render_jumps(prefix)}


OWNED_COMMENT = '-m comment --comment "%s: ' % OWNER_TAG


def is_ours(spec):
    """A rule is ours when it carries our comment as the renderer writes it: quoted, ``kvmnet.nat: <text>``.

    (iptables-save quotes a comment only when it holds a space, and every comment we write does; an
    unquoted ``--comment kvmnet.nat:x`` was written by someone else and is foreign.)"""
    return OWNED_COMMENT in spec
