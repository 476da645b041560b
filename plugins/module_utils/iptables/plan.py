# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The iptables backend, the plan: PRIVATE to this collection, no stable API.

Pure Python, no I/O. Refuses a ruleset the collection does not own the way it must (foreign rules in
or jumping into its chains), and plans the one ``iptables-restore --noflush`` payload per family that
brings the live tables (save.py) to the desired state (rules.py). Every payload is checked against the
grammar (grammar.py) before it is returned. The persisted copy is persisted.py; the commands, netfilter.py.
"""

from __future__ import annotations

from ansible_collections.kvmnet.nat.plugins.module_utils._backend import Plan, RulesetError
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables.grammar import check_payload
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables.rules import is_ours, owned, our_jumps
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables.save import jumps_into_ours


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
            foreign = [spec for spec in table.rules.get(chain, []) if not is_ours(spec)]
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


def plan(tables, desired, check=True):
    """Compare the live tables with the desired state and build one restore payload.

    Only tables where something differs appear in the payload. In each: changed chains are
    declared (which flushes them), misplaced or duplicate jumps deleted by their exact spec, the
    chains refilled, unwanted chains deleted, and the jumps inserted at position 1. The payload is
    checked against the grammar of what the engine writes before it is returned; ``check=False``
    only where the payload is compared and never applied or written (the doctor's saved-file check).
    """
    check_ownership(tables, desired.prefix)
    payload = _Payload()
    _plan_jumps(tables, desired, payload)
    _plan_chains(tables, desired, payload)
    text = payload.text()
    if check:
        check_payload(text, desired.prefix)
    return Plan(family=desired.family, changed=bool(text), payload=text,
                before=managed_view(tables, desired.prefix), after=desired_view(desired), reasons=payload.reasons)
