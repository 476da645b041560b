# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The iptables backend, on the host: PRIVATE to this collection, no stable API.

Finds which iptables flavour (legacy or nf_tables) a family uses, reads the
ruleset with ``*-save`` and applies a payload with ``*-restore --noflush``.
Every command runs through _command.run (an argument list, ``LANG=C``); a failure raises
CommandError carrying the command and its stderr.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ansible_collections.kvmnet.nat.plugins.module_utils._backend import RulesetError
from ansible_collections.kvmnet.nat.plugins.module_utils._command import CommandError, run
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables.save import in_use

TOOL = {4: 'iptables', 6: 'ip6tables'}
_ERROR_LINE_RE = re.compile(r'Error occurred at line: (\d+)')


@dataclass
class Tools:
    """The save and restore commands of the flavour a family's rules live in."""
    family: int
    flavour: str          # 'legacy' or 'nft'
    save_cmd: list
    restore_cmd: list
    saved: str = ''       # the save taken while detecting, reused as the first read


def _flavour_of(module, binary):
    _rc, out, err = run(module, [binary, '--version'], check=False)
    text = out + err
    if 'legacy' in text:
        return 'legacy'
    if 'nf_tables' in text:
        return 'nft'
    return None


LEGACY_TABLES = {4: '/proc/net/ip_tables_names', 6: '/proc/net/ip6_tables_names'}


def legacy_tables(family):
    """The tables iptables-legacy holds in this network namespace; None when the kernel does not say."""
    try:
        with open(LEGACY_TABLES[family]) as handle:
            return handle.read().split()
    except OSError:
        return None


def detect(module, family, legacy=legacy_tables):
    """Pick the flavour this family's rules live in; refuse a host that uses both.

    When the kernel shows iptables-legacy holds no table here, its ruleset is not read (it is empty),
    so a host that uses nf_tables is read once per family. Returns None when the host has no iptables
    tool for the family at all.
    """
    base = TOOL[family]
    found = {}
    for flavour in ('legacy', 'nft'):
        save = module.get_bin_path('%s-%s-save' % (base, flavour))
        restore = module.get_bin_path('%s-%s-restore' % (base, flavour))
        if not save or not restore:
            continue
        if flavour == 'legacy' and legacy(family) == []:
            found[flavour] = Tools(family, flavour, [save], [restore], '')
            continue
        rc, out, _err = run(module, [save], check=False)
        if rc == 0:
            found[flavour] = Tools(family, flavour, [save], [restore], out)
    used = [f for f in ('legacy', 'nft') if f in found and in_use(found[f].saved)]
    if len(used) == 2:
        raise RulesetError(
            'this host has %s rules in both iptables-legacy and iptables-nft; rules in one are '
            'invisible to the other and the result would be unpredictable. Move everything to one '
            'flavour first (see %s-legacy-save and %s-nft-save)' % (base, base, base))
    if used:
        return found[used[0]]
    generic_save = module.get_bin_path('%s-save' % base)
    generic_restore = module.get_bin_path('%s-restore' % base)
    default = _flavour_of(module, generic_save) if generic_save else None
    if default in found:
        return found[default]
    if found:
        return found.get('nft') or found['legacy']
    if generic_save and generic_restore:
        return Tools(family, default or 'unknown', [generic_save], [generic_restore],
                     run(module, [generic_save], context='reading the IPv%d ruleset' % family)[1])
    return None


def tools_for(module, family, flavour):
    """The commands of a named flavour (``unknown``: the generic ``iptables-save``/``-restore``), for a
    restore that must use the flavour its rules were applied with; None when the host lacks them."""
    base = TOOL[family] if flavour == 'unknown' else '%s-%s' % (TOOL[family], flavour)
    save_cmd, restore_cmd = module.get_bin_path(base + '-save'), module.get_bin_path(base + '-restore')
    if not (save_cmd and restore_cmd):
        return None
    return Tools(family, flavour, [save_cmd], [restore_cmd])


def save(module, tools):
    return run(module, tools.save_cmd, context='reading the IPv%d ruleset' % tools.family)[1]


def _failing_line(payload, stderr):
    m = _ERROR_LINE_RE.search(stderr or '')
    if not m:
        return ''
    lines = payload.splitlines()
    index = int(m.group(1)) - 1
    return lines[index] if 0 <= index < len(lines) else ''


def restore(module, tools, payload, lock_timeout, test=False):
    """Apply (or with test=True only check) one payload; errors name the failing rule."""
    cmd = tools.restore_cmd + ['--noflush', '--wait', str(lock_timeout)]
    if test:
        cmd.append('--test')
    rc, out, err = run(module, cmd, data=payload, check=False)
    if rc != 0:
        line = _failing_line(payload, err)
        context = 'applying IPv%d rules%s' % (tools.family, ' (test run)' if test else '')
        if line:
            context += ', at rule "%s"' % line
        raise CommandError(cmd, rc, err or out, context)
