# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Stage 3 of the rule engine, the plan: PRIVATE to this collection, no stable API.

Pure Python, no I/O. Reads ``iptables-save`` output, refuses a ruleset the collection does not
own the way it must (foreign rules in or jumping into its chains), and plans the one
``iptables-restore --noflush`` payload per family that brings the live ruleset to the desired one
(_render.py). Every payload is checked against the grammar of what the engine writes before it is
returned. Also the persisted copy for boot. The host side (running the commands) is _netfilter.py.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import shlex
from dataclasses import dataclass, field

from ansible_collections.kvmnet.nat.plugins.module_utils._forward import (
    PROTOCOLS, address_text, parse_address, parse_network, parse_ports, valid_interface)
from ansible_collections.kvmnet.nat.plugins.module_utils._render import (
    OWNER_TAG, _ct_addr, _net, owned, our_jumps)


class RulesetError(Exception):
    """The live ruleset is in a state the engine refuses to change."""

# ---------------------------------------------------------------- parsing


@dataclass
class Table:
    name: str
    chains: dict = field(default_factory=dict)   # chain -> policy ('-' for user chains)
    rules: dict = field(default_factory=dict)    # chain -> [spec]
    packets: dict = field(default_factory=dict)  # chain -> [packet count of each rule] (iptables-save -c)


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
            packets = None
            if line.startswith('['):  # "[pkts:bytes] -A CHAIN spec" (iptables-save -c)
                counter, _sep, line = line[1:].partition(']')
                line = line.strip()
                count = counter.split(':')[0]
                packets = int(count) if count.isdigit() else None
            parts = line.split(None, 2)
            if len(parts) < 3 or parts[0] != '-A':
                raise RulesetError('iptables-save line %d has no rule: %s' % (lineno, raw))
            current.rules.setdefault(parts[1], []).append(parts[2])
            current.packets.setdefault(parts[1], []).append(packets)
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


def jumps_into_ours(spec, prefix, table):
    """True if the rule jumps (or goes) to one of our chains."""
    return owned(_targets(spec) or '', prefix, table)

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


def read_persisted(text):
    """(fields of the ``kvmnet-nat-restore`` header line, the body) of a persisted file, as
    kvmnet-nat-restore reads it; ``valid``: the body's SHA-256 is the one in the header."""
    lines = text.split('\n')
    meta_index = next((i for i, line in enumerate(lines[:3]) if line.startswith('# kvmnet-nat-restore ')), None)
    if meta_index is None:
        return {'valid': False}, text
    fields = dict(word.split('=', 1) for word in lines[meta_index].split()[2:] if '=' in word)
    body = '\n'.join(lines[meta_index + 1:])
    fields['valid'] = fields.get('sha256') == hashlib.sha256(body.encode('utf-8', 'replace')).hexdigest()
    return fields, body
