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
from dataclasses import dataclass, field

from ansible_collections.kvmnet.nat.plugins.module_utils._backend import RulesetError
from ansible_collections.kvmnet.nat.plugins.module_utils._command import CommandError, failing_line, run
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


_COUNTS_RE = re.compile(r'^\[\d+:\d+\] ', re.MULTILINE)
FLAVOURS = ('legacy', 'nft')


def in_use_counted(text):
    """save.in_use of a save read with or without ``-c`` (its ``[packets:bytes]`` put aside)."""
    return in_use(_COUNTS_RE.sub('', text))


@dataclass
class Saves:
    """One family's ``*-save`` output per flavour the host has the tools for, and the flavour chosen."""
    family: int
    texts: dict = field(default_factory=dict)      # {flavour: save text}; '' for legacy when the kernel holds none
    commands: dict = field(default_factory=dict)   # {flavour: [save command]}
    flavour: str | None = None                     # choose(); None: rules in both, or no tool

    @property
    def both(self):
        """Rules in both flavours: the engine refuses such a host."""
        return len([f for f in FLAVOURS if in_use_counted(self.texts.get(f, ''))]) == 2


def choose(texts, default=None):
    """The flavour a family's rules are kept in: ``texts`` are {flavour: save text} of the flavours the host
    has; ``default`` is the flavour of the plain ``iptables-save`` (read only when no flavour holds rules).
    The one flavour holding rules; with none, the default when the host has it, else nft, else legacy,
    else the default (or 'unknown' for a lone plain ``iptables-save``). None when both hold rules (the
    engine refuses) or there is no tool."""
    used = [f for f in FLAVOURS if f in texts and in_use_counted(texts[f])]
    if len(used) == 2:
        return None
    if used:
        return used[0]
    if default in texts:
        return default
    for flavour in ('nft', 'legacy', 'unknown'):
        if flavour in texts:
            return flavour
    return None


def read_saves(module, family, counters=False, legacy=legacy_tables):
    """Each flavour's ``*-save`` of one family, read once (with packet counts for the doctor), and the
    flavour chosen. When the kernel shows iptables-legacy holds no table here, its ruleset is not read
    (it is empty), so a host that uses nf_tables is read once per family."""
    base = TOOL[family]
    option = ['-c'] if counters else []
    saves = Saves(family)
    for flavour in FLAVOURS:
        save_cmd = module.get_bin_path('%s-%s-save' % (base, flavour))
        if not save_cmd:
            continue
        if flavour == 'legacy' and legacy(family) == []:
            saves.texts[flavour], saves.commands[flavour] = '', [save_cmd]
            continue
        rc, out, _err = run(module, [save_cmd] + option, check=False)
        if rc == 0:
            saves.texts[flavour], saves.commands[flavour] = out, [save_cmd]
    generic = module.get_bin_path('%s-save' % base)
    default = None
    if generic and not any(in_use_counted(text) for text in saves.texts.values()):
        default = _flavour_of(module, generic)
    if generic and not saves.texts:
        name = default or 'unknown'
        saves.texts[name] = run(module, [generic] + option, context='reading the IPv%d ruleset' % family)[1]
        saves.commands[name] = [generic]
    saves.flavour = choose(saves.texts, default)
    return saves


def detect(module, family, legacy=legacy_tables):
    """The Tools of the flavour this family's rules live in (read_saves, choose); refuses a host that
    uses both. Returns None when the host has no iptables tool (save and restore) for the family."""
    saves = read_saves(module, family, legacy=legacy)
    base = TOOL[family]
    if saves.both:
        raise RulesetError(
            'this host has %s rules in both iptables-legacy and iptables-nft; rules in one are '
            'invisible to the other and the result would be unpredictable. Move everything to one '
            'flavour first (see %s-legacy-save and %s-nft-save)' % (base, base, base))
    if saves.flavour is None:
        return None
    save_cmd = saves.commands[saves.flavour]
    restore_cmd = module.get_bin_path(save_cmd[0].rsplit('/', 1)[-1][:-len('-save')] + '-restore')
    if not restore_cmd:
        return None
    return Tools(family, saves.flavour, save_cmd, [restore_cmd], saves.texts[saves.flavour])


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


def restore(module, tools, payload, lock_timeout, test=False):
    """Apply (or with test=True only check) one payload; errors name the failing rule."""
    cmd = tools.restore_cmd + ['--noflush', '--wait', str(lock_timeout)]
    if test:
        cmd.append('--test')
    rc, out, err = run(module, cmd, data=payload, check=False)
    if rc != 0:
        line = failing_line(payload, err, _ERROR_LINE_RE)
        context = 'applying IPv%d rules%s' % (tools.family, ' (test run)' if test else '')
        if line:
            context += ', at rule "%s"' % line
        raise CommandError(cmd, rc, err or out, context)
