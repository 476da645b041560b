# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The iptables backend, the grammar of what it writes: PRIVATE to this collection, no stable API.

Pure Python, no I/O. Every payload (and every persisted file) is checked line by line against what
the renderer (rules.py) writes before it is handed to ``iptables-restore``; anything else is refused.
"""

from __future__ import annotations

import ipaddress
import re

from ansible_collections.kvmnet.nat.plugins.module_utils._backend import RulesetError
from ansible_collections.kvmnet.nat.plugins.module_utils._forward import (
    PROTOCOLS, address_text, parse_address, parse_network, parse_ports, valid_interface)
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables.rules import OWNER_TAG, ct_text, net_text, owned, our_jumps


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
    return _canonical(text, lambda t: net_text(parse_network(t, 'match')) if '/' in t else None)


def _is_ct_addr(text):
    """A conntrack address as we render it: a bare address, or a network shorter than a host."""
    def render(t):
        return ct_text(parse_network(t, 'match') if '/' in t else parse_address(t, 'match'))
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
