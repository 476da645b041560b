# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Follow a packet through rules written by the engine, as the kernel would (tests and benchmarks).

Understands exactly the options the engine writes (see _plan.check_payload): address, port and
conntrack matches, ``-j`` into a chain (returns), ``-g`` (does not), and terminal targets. A packet
is a dict: proto, src, dst, dport, iface, local (destination is a local address), and its conntrack
entry: states (e.g. ('NEW', 'DNAT')), origdst, origdstport, replsrc.
"""

from __future__ import annotations

import functools
import ipaddress
import shlex

TERMINAL = ('ACCEPT', 'DNAT', 'MASQUERADE', 'DROP', 'REJECT')


@functools.lru_cache(maxsize=None)
def _network(text):
    return ipaddress.ip_network(text, strict=False)


def _in(value, text):
    return value is not None and ipaddress.ip_address(value) in _network(text)


def _ports(text, port):
    first, _sep, last = text.partition(':')
    return port is not None and int(first) <= port <= int(last or first)


@functools.lru_cache(maxsize=None)
def _parse(spec):
    """(tests, how, target): tests are (option, value, negated) in rule order."""
    words = shlex.split(spec)
    tests, how, target, negate, i = [], None, None, False, 0
    while i < len(words):
        word = words[i]
        if word == '!':
            negate = True
            i += 1
            continue
        value = words[i + 1] if i + 1 < len(words) else None
        if word in ('-j', '-g'):
            how, target = word, value
        elif word not in ('-m', '--comment', '--to-destination'):
            tests.append((word, value, negate))
        negate = False
        i += 2
    return tuple(tests), how, target


def _test(option, value, packet):
    if option == '-s':
        return _in(packet.get('src'), value)
    if option == '-d':
        return _in(packet.get('dst'), value)
    if option == '-i':
        iface = packet.get('iface') or ''
        return iface.startswith(value[:-1]) if value.endswith('+') else iface == value
    if option == '-p':
        return packet.get('proto') == value
    if option == '--dport':
        return _ports(value, packet.get('dport'))
    if option == '--ctstate':
        return bool(set(value.split(',')) & set(packet.get('states', ('NEW',))))
    if option == '--ctorigdst':
        return _in(packet.get('origdst'), value)
    if option == '--ctorigdstport':
        return _ports(value, packet.get('origdstport'))
    if option == '--ctreplsrc':
        return _in(packet.get('replsrc'), value)
    if option == '--dst-type':
        return bool(packet.get('local', False))
    raise ValueError('rulewalk does not know %s' % option)


def matches(spec, packet):
    """Does the rule's match part take the packet? Returns (match, '-j' or '-g', target)."""
    tests, how, target = _parse(spec)
    return all(_test(option, value, packet) != negated for option, value, negated in tests), how, target


def walk(chains, start, packet, limit=10000, count=False):
    """The first terminal rule the packet meets from chain ``start`` (a spec), or None when it
    returns to the built-in chain that called ``start``. ``chains``: {name: [spec]}. With
    ``count``: (that rule, how many rules the packet was tested against on its way)."""
    stack = []                      # (chain, next index) to return to after a -j
    chain, index, tested = start, 0, 0
    while True:
        rules = chains[chain]
        if index >= len(rules):
            if not stack:
                return (None, tested) if count else None
            chain, index = stack.pop()
            continue
        tested += 1
        assert tested < limit, 'loop in the rules'
        spec = rules[index]
        ok, how, target = matches(spec, packet)
        if not ok:
            index += 1
            continue
        if target in TERMINAL:
            return (spec, tested) if count else spec
        if how == '-j':
            stack.append((chain, index + 1))
        chain, index = target, 0


def from_save(text, prefix='KVMNAT'):
    """{chain: [spec]} of the chains of ours in an iptables-save text."""
    chains = {}
    for line in text.splitlines():
        if line.startswith(':%s' % prefix):
            chains.setdefault(line[1:].split()[0], [])
        elif line.startswith('-A %s' % prefix):
            chain, spec = line[3:].split(' ', 1)
            chains.setdefault(chain, []).append(spec)
    return chains


def by_name(desired_chains):
    """{(table, chain): rules} -> {chain: rules}."""
    return {chain: rules for (_table, chain), rules in desired_chains.items()}
