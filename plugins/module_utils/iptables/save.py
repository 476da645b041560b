# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The iptables backend, reading ``iptables-save`` text: PRIVATE to this collection, no stable API.

Pure Python, no I/O. Every reading of live iptables text is here: the tables and their rules (with
packet counts from ``-c``), a rule's jump target, whether a flavour is in use, a DNAT rule's
destination and the DNAT destinations of our rules by label. A rule's matches are read by walk.py.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from ansible_collections.kvmnet.nat.plugins.module_utils._backend import RulesetError
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables import walk
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables.rules import OWNED_COMMENT, owned


@dataclass
class Table:
    name: str
    chains: dict = field(default_factory=dict)   # chain -> policy ('-' for user chains)
    rules: dict = field(default_factory=dict)    # chain -> [spec]
    packets: dict = field(default_factory=dict)  # chain -> [packet count of each rule] (iptables-save -c)


def _rule_line(line, lineno, raw):
    """(chain, spec, packets) of a ``-A`` line, or of ``[pkts:bytes] -A ...`` (iptables-save -c)."""
    packets = None
    if line.startswith('['):
        counter, _sep, line = line[1:].partition(']')
        line = line.strip()
        count = counter.split(':')[0]
        packets = int(count) if count.isdigit() else None
    parts = line.split(None, 2)
    if len(parts) < 3 or parts[0] != '-A':
        raise RulesetError('iptables-save line %d has no rule: %s' % (lineno, raw))
    return parts[1], parts[2], packets


def parse_save(text):
    """Parse ``iptables-save`` output into {table: Table}; with ``-c``, each rule's packet count is
    kept in ``Table.packets`` (None without)."""
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
            chain, spec, packets = _rule_line(line, lineno, raw)
            current.rules.setdefault(chain, []).append(spec)
            current.packets.setdefault(chain, []).append(packets)
        else:
            raise RulesetError('iptables-save line %d not understood: %s' % (lineno, raw))
    return tables


def target(spec):
    """The jump target of a rule spec (-j or -g), or None."""
    try:
        words = shlex.split(spec)
    except ValueError:
        words = spec.split()
    for i, word in enumerate(words[:-1]):
        if word in ('-j', '--jump', '-g', '--goto'):
            return words[i + 1]
    return None


def jumps_into_ours(spec, prefix, table):
    """True if the rule jumps (or goes) to one of our chains."""
    return owned(target(spec) or '', prefix, table)


def in_use(text):
    """A flavour is in use when its ruleset has a rule or a user-defined chain."""
    for line in text.splitlines():
        if line.startswith('-A ') or (line.startswith(':') and line.split()[1:2] == ['-']):
            return True
    return False


def destination(rule_spec):
    """(address text, first port or None) of a DNAT rule's --to-destination."""
    value = walk.parsed(rule_spec).target_option('--to-destination')
    if not value:
        return None, None
    if value.startswith('['):
        host, _sep, rest = value[1:].partition(']')
        port = rest[1:] if rest.startswith(':') else ''
    elif value.count(':') == 1:
        host, _sep, port = value.partition(':')
    else:
        host, port = value, ''
    first = port.split('-')[0].split('/')[0]
    return host, int(first) if first.isdigit() else None


def label(spec):
    """The text of our comment on a rule (``kvmnet.nat: <label>``), or None."""
    start = spec.find(OWNED_COMMENT)
    end = spec.find('"', start + len(OWNED_COMMENT)) if start >= 0 else -1
    return spec[start + len(OWNED_COMMENT):end] if end >= 0 else None


def dnat_destinations(tables, prefix):
    """{forward label: guest address} of the DNAT rules in our nat chains (the first rule of a label wins)."""
    found = {}
    nat = tables.get('nat')
    for chain, rules in (nat.rules.items() if nat else ()):
        if not owned(chain, prefix, 'nat'):
            continue
        for spec in rules:
            name = label(spec)
            if name is not None and '-j DNAT' in spec:
                found.setdefault(name, destination(spec)[0])
    return found


def counter(table, rule):
    """The packet count of ``rule`` ((chain, position)) in a Table read with ``-c``, or None."""
    if table is None or rule is None:
        return None
    counts = table.packets.get(rule[0], [])
    return counts[rule[1] - 1] if len(counts) >= rule[1] else None
