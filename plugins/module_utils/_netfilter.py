# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Host side of the rule engine: PRIVATE to this collection, no stable API.

Finds which iptables flavour (legacy or nf_tables) a family uses, reads the
ruleset with ``*-save`` and applies a payload with ``*-restore --noflush``.
Every command is an argument list run through ``module.run_command`` with
``LANG=C``; a failure raises CommandError carrying the command and its stderr.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ansible_collections.kvmnet.nat.plugins.module_utils import _engine

ENVIRON = {'LANG': 'C', 'LC_ALL': 'C', 'LC_MESSAGES': 'C'}
TOOL = {4: 'iptables', 6: 'ip6tables'}
_ERROR_LINE_RE = re.compile(r'Error occurred at line: (\d+)')


class CommandError(Exception):
    def __init__(self, cmd, rc, stderr, context=''):
        self.cmd = cmd
        self.rc = rc
        self.stderr = (stderr or '').strip()
        self.context = context
        text = '%s failed (rc=%s): %s' % (' '.join(cmd), rc, self.stderr or '(no stderr)')
        super().__init__('%s: %s' % (context, text) if context else text)


@dataclass
class Backend:
    family: int
    flavour: str          # 'legacy' or 'nft'
    save_cmd: list
    restore_cmd: list
    saved: str = ''       # the save taken while detecting, reused as the first read


def _run(module, cmd, data=None, context=''):
    rc, out, err = module.run_command(cmd, data=data, binary_data=data is not None,
                                      environ_update=ENVIRON)
    if rc != 0:
        raise CommandError(cmd, rc, err or out, context)
    return out


def _in_use(text):
    """A flavour is in use when its ruleset has a rule or a user-defined chain."""
    for line in text.splitlines():
        if line.startswith('-A ') or (line.startswith(':') and line.split()[1:2] == ['-']):
            return True
    return False


def _flavour_of(module, binary):
    rc, out, err = module.run_command([binary, '--version'], environ_update=ENVIRON)
    text = out + err
    if 'legacy' in text:
        return 'legacy'
    if 'nf_tables' in text:
        return 'nft'
    return None


def detect(module, family):
    """Pick the flavour this family's rules live in; refuse a host that uses both.

    Returns None when the host has no iptables tool for the family at all.
    """
    base = TOOL[family]
    found = {}
    for flavour in ('legacy', 'nft'):
        save = module.get_bin_path('%s-%s-save' % (base, flavour))
        restore = module.get_bin_path('%s-%s-restore' % (base, flavour))
        if not save or not restore:
            continue
        rc, out, err = module.run_command([save], environ_update=ENVIRON)
        if rc == 0:
            found[flavour] = Backend(family, flavour, [save], [restore], out)
    in_use = [f for f in ('legacy', 'nft') if f in found and _in_use(found[f].saved)]
    if len(in_use) == 2:
        raise _engine.RulesetError(
            'this host has %s rules in both iptables-legacy and iptables-nft; rules in one are '
            'invisible to the other and the result would be unpredictable. Move everything to one '
            'flavour first (see %s-legacy-save and %s-nft-save)' % (base, base, base))
    if in_use:
        return found[in_use[0]]
    generic_save = module.get_bin_path('%s-save' % base)
    generic_restore = module.get_bin_path('%s-restore' % base)
    default = _flavour_of(module, generic_save) if generic_save else None
    if default in found:
        return found[default]
    if found:
        return found.get('nft') or found['legacy']
    if generic_save and generic_restore:
        return Backend(family, default or 'unknown', [generic_save], [generic_restore],
                       _run(module, [generic_save], context='reading the IPv%d ruleset' % family))
    return None


def save(module, backend):
    return _run(module, backend.save_cmd, context='reading the IPv%d ruleset' % backend.family)


def _failing_line(payload, stderr):
    m = _ERROR_LINE_RE.search(stderr or '')
    if not m:
        return ''
    lines = payload.splitlines()
    index = int(m.group(1)) - 1
    return lines[index] if 0 <= index < len(lines) else ''


def restore(module, backend, payload, lock_timeout, test=False):
    """Apply (or with test=True only check) one payload; errors name the failing rule."""
    cmd = backend.restore_cmd + ['--noflush', '--wait', str(lock_timeout)]
    if test:
        cmd.append('--test')
    rc, out, err = module.run_command(cmd, data=payload, binary_data=True, environ_update=ENVIRON)
    if rc != 0:
        line = _failing_line(payload, err)
        context = 'applying IPv%d rules%s' % (backend.family, ' (test run)' if test else '')
        if line:
            context += ', at rule "%s"' % line
        raise CommandError(cmd, rc, err or out, context)
