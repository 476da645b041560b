# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The nftables backend, the plan: PRIVATE to this collection, no stable API.

Pure Python, no I/O. Live (ruleset.py) + Desired (rules.py) -> one Plan whose payload is one ``nft -f``
transaction, or nothing when our table and the accept rules are exactly as desired:

- our table, when it differs in anything (or is to go): ``table inet X`` / ``delete table inet X`` /
  ``table inet X { ... }`` (a ``flush table`` would leave set elements behind). The table is ours by its
  name: what it holds that we did not write is dropped, and the reasons say what;
- the accept rule: once and first in each libvirt ``forward`` chain that exists (``ip`` and ``ip6``);
  copies, a misplaced or a changed one are deleted by handle and it is inserted at the top, in the
  same transaction. libvirt's tables and chains are never created, flushed or deleted.

The transaction is all or nothing: if libvirt rebuilt its table between the read and the apply, a
handle no longer there fails it and nothing changes (run again).
"""

from __future__ import annotations

from ansible_collections.kvmnet.nat.plugins.module_utils._backend import Plan
from ansible_collections.kvmnet.nat.plugins.module_utils.nftables.rules import LIBVIRT_CHAIN, LIBVIRT_TABLE, valid_table

_SHOWN = 5      # dropped lines named in a reason, at most


def table_commands(name, table):
    """Replace (or with table=None remove) ``table inet <name>`` from whatever state it is in."""
    if not valid_table(name):
        raise ValueError('refusing to write the table name %r' % (name,))
    head = 'table inet %s\ndelete table inet %s\n' % (name, name)
    return head + table.script() if table is not None else head


def accept_commands(family, rules_found, accept):
    """(commands, reason) that make ``accept`` (or None: no rule) the first and only rule of ours in
    libvirt's forward chain of ``family``; ([], None) when it already is."""
    where = '%s %s %s' % (family, LIBVIRT_TABLE, LIBVIRT_CHAIN)
    ours = [(pos, rule) for pos, rule in enumerate(rules_found) if rule.ours]
    if accept is None:
        wanted_ok = not ours
    else:
        wanted_ok = len(ours) == 1 and ours[0][0] == 0 and ours[0][1].text == accept
    if wanted_ok:
        return [], None
    commands = ['delete rule %s %s %s handle %d' % (family, LIBVIRT_TABLE, LIBVIRT_CHAIN, int(rule.handle))
                for _pos, rule in ours]
    if accept is None:
        reason = '%s: accept rule removed' % where
    else:
        commands.append('insert rule %s %s %s %s' % (family, LIBVIRT_TABLE, LIBVIRT_CHAIN, accept))
        if not ours:
            reason = '%s: accept rule added' % where
        elif len(ours) > 1:
            reason = '%s: %d accept rules of kvmnet.nat, keeping one, first' % (where, len(ours))
        elif ours[0][1].text != accept:
            reason = '%s: accept rule differs (%s), replaced' % (where, ours[0][1].text)
        else:
            reason = '%s: accept rule was at position %d, moved back to 1' % (where, ours[0][0] + 1)
    return commands, reason


def _table_reasons(name, live_lines, want_lines, removing):
    if not live_lines:
        return ['table inet %s created' % name]
    if removing:
        return ['table inet %s removed' % name]
    want, have = set(want_lines), set(live_lines)
    dropped = [line for line in live_lines if line not in want]
    reasons = ['table inet %s replaced: %d item(s) added, %d dropped' % (name, len(want - have), len(dropped))]
    if dropped:
        more = ' (and %d more)' % (len(dropped) - _SHOWN) if len(dropped) > _SHOWN else ''
        reasons.append('table inet %s: dropped %s%s' % (name, '; '.join(dropped[:_SHOWN]), more))
    return reasons


def accept_view(live):
    """Our accept rules as they are, one line each with its position (1 = first)."""
    return ['%s %s %s[%d] %s' % (family, LIBVIRT_TABLE, LIBVIRT_CHAIN, pos + 1, rule.text)
            for family, found in sorted(live.accept_positions().items()) for pos, rule in found]


def plan(live, desired):
    """Live -> desired: a Plan with the one transaction (payload '' when nothing differs)."""
    name = desired.name
    live_lines = live.table.lines() if live.table is not None else []
    want_lines = desired.table.lines() if desired.table is not None else []
    commands, reasons = [], []
    if live_lines != want_lines:
        commands.append(table_commands(name, desired.table))
        reasons.extend(_table_reasons(name, live_lines, want_lines, desired.table is None))
    # another chain prefix's table of ours still needs the one accept rule (it is shared: one mark, one comment)
    shared = any(fam == 'inet' and tname != name and (tname == 'kvmnet_nat' or tname.startswith('kvmnet_nat_'))
                 for fam, tname in live.tables)
    for family, rules_found in sorted(live.libvirt.items()):
        if rules_found is None or (desired.accept is None and shared):
            continue        # libvirt's table without its forward chain: never created by us
        lines, reason = accept_commands(family, rules_found, desired.accept)
        commands.extend(lines)
        if reason:
            reasons.append(reason)
    payload = ''.join(c if c.endswith('\n') else c + '\n' for c in commands)
    after = want_lines + ['%s %s %s[1] %s' % (family, LIBVIRT_TABLE, LIBVIRT_CHAIN, desired.accept)
                          for family, found in sorted(live.libvirt.items()) if found is not None and desired.accept]
    return Plan(family=None, changed=bool(payload), payload=payload, before=live_lines + accept_view(live),
                after=after, reasons=reasons)
