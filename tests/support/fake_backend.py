# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Two stand-ins for a host's firewall, for the converge driver's contract tests (and any test that
needs a host without root):

- FakeEngine/FakeBackend: a backend of _backend.py that keeps each family's managed items (one per
  forward) in memory; no text, no commands.
- IptablesHost: the commands of an iptables-nft host (``*-save``, ``*-restore --noflush [--test]``),
  as answers for tests.unit.plugins.fakes.FakeModule, applying each payload to its tables as
  iptables-restore would (declare = create or flush, -A, -D by spec, -I at 1, -X).

Both can be told to fail a test run, fail an apply, or accept an apply and change nothing (a read
back that differs).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from ansible_collections.kvmnet.nat.plugins.module_utils._backend import BackendUnavailable, Plan, RulesetError
from ansible_collections.kvmnet.nat.plugins.module_utils._command import CommandError


@dataclass
class Faults:
    test: set = field(default_factory=set)      # families whose test run fails
    apply: set = field(default_factory=set)     # families whose apply fails
    ignore: set = field(default_factory=set)    # families whose apply succeeds and changes nothing


@dataclass
class FakeDesired:
    family: int
    items: tuple = ()

    @property
    def empty(self):
        return not self.items


class FakeHost:
    """What the fake backend reads and changes: {scope: set of items}; ``families``: the ones it has a tool
    for; ``together``: one scope 'inet' holds both families (as one nftables table does)."""

    def __init__(self, families=(4, 6), together=False):
        self.families = tuple(families)
        self.together = together
        self.live = {'inet': set()} if together else {family: set() for family in families}
        self.faults = Faults()
        self.applied = []       # (family, payload) of every apply that ran


class FakeEngine:
    diff_header = 'managed fake rules'

    def __init__(self, host, prefix='KVMNAT'):
        self.host, self.prefix = host, prefix

    def problems(self):
        return [] if self.prefix.isupper() else ['chain_prefix %r must be upper case' % (self.prefix,)]

    @property
    def scopes(self):
        return ('inet',) if self.host.together else (4, 6)

    @property
    def saved_files(self):
        return {'inet': 'nft'} if self.host.together else {'ipv4': 'v4', 'ipv6': 'v6'}

    def open(self, scope):
        if (scope == 'inet' and not self.host.families) or (scope != 'inet' and scope not in self.host.families):
            raise BackendUnavailable('this host has no fake tool')
        return FakeBackend(self.host, scope)

    def open_saved(self, family, text):
        backend = self.open(family)
        return backend, backend.desired_from_persisted(text)


class FakeBackend:
    flavour = 'fake'

    def __init__(self, host, scope):
        self.host, self.scope = host, scope
        self.family = None if scope == 'inet' else scope
        self.families = (4, 6) if scope == 'inet' else (scope,)
        self.key = 'inet' if scope == 'inet' else 'ipv%d' % scope

    def read(self):
        return frozenset(self.host.live[self.scope])

    def desired(self, forwards):
        return FakeDesired(self.family, tuple(sorted('%d %s' % (f.family, f.label) if self.family is None else f.label
                                                     for f in forwards if f.family in self.families)))

    def plan(self, live, desired):
        added, removed = sorted(set(desired.items) - live), sorted(live - set(desired.items))
        payload = ''.join('+%s\n' % item for item in added) + ''.join('-%s\n' % item for item in removed)
        return Plan(family=self.family, changed=bool(payload), payload=payload, before=sorted(live),
                    after=list(desired.items), reasons=['%s added' % i for i in added] + ['%s removed' % i for i in removed])

    def _fail(self, what):
        raise CommandError(['fake-restore'], 1, 'fake %s failed' % what, 'applying %s rules' % self.key)

    def test(self, plan):
        if self.scope in self.host.faults.test:
            self._fail('test')

    def apply(self, plan):
        if self.scope in self.host.faults.apply:
            self._fail('apply')
        self.host.applied.append((self.scope, plan.payload))
        if self.scope not in self.host.faults.ignore:
            self.host.live[self.scope] = set(plan.after)

    def read_back(self, desired):
        return self.plan(self.read(), desired)

    def persisted_text(self, desired):
        if desired.empty:
            return None
        body = ''.join('%s\n' % item for item in desired.items)
        return '# fake scope=%s sha256=%s\n%s' % (self.scope, hashlib.sha256(body.encode()).hexdigest(), body)

    def read_persisted(self, text):
        header, _sep, body = text.partition('\n')
        fields = dict(word.split('=', 1) for word in header.split()[2:] if '=' in word)
        fields['valid'] = fields.get('sha256') == hashlib.sha256(body.encode()).hexdigest()
        return fields, body

    def desired_from_persisted(self, text):
        fields, body = self.read_persisted(text)
        if not fields['valid']:
            raise RulesetError('the saved rules have no valid header')
        return FakeDesired(self.family, tuple(body.splitlines()))


TOOLS = {4: 'iptables-nft', 6: 'ip6tables-nft'}
BINARIES = {'%s-%s' % (tool, verb) for tool in TOOLS.values() for verb in ('save', 'restore')}


class IptablesHost:
    """iptables-nft of both families, for a FakeModule whose run_command answers with ``answer``."""

    def __init__(self, texts):
        self.tables = {family: self._parse(text) for family, text in texts.items()}
        self.faults = Faults()
        self.applied = []

    @staticmethod
    def _parse(text):
        tables, current = {}, None
        for line in text.splitlines():
            if line.startswith('*'):
                current = tables.setdefault(line[1:], {})
            elif line.startswith(':'):
                name, policy = line[1:].split()[:2]
                current[name] = (policy, [])
            elif line.startswith('-A '):
                _a, chain, spec = line.split(' ', 2)
                current[chain][1].append(spec)
        return tables

    def save(self, family):
        out = []
        for name, chains in self.tables[family].items():
            out.append('*' + name)
            out.extend(':%s %s [0:0]' % (chain, policy) for chain, (policy, _rules) in chains.items())
            out.extend('-A %s %s' % (chain, spec) for chain, (_p, rules) in chains.items() for spec in rules)
            out.append('COMMIT')
        return '\n'.join(out) + '\n'

    def restore(self, family, payload):
        chains = None
        for line in payload.splitlines():
            words = line.split(' ', 3)
            if line.startswith('*'):
                chains = self.tables[family].setdefault(line[1:], {})
            elif line.startswith(':'):
                chains[line[1:].split()[0]] = ('-', [])
            elif words[0] == '-A':
                chains[words[1]][1].append(line.split(' ', 2)[2])
            elif words[0] == '-D':
                chains[words[1]][1].remove(line.split(' ', 2)[2])
            elif words[0] == '-I':       # a built-in chain iptables-save did not show yet
                chains.setdefault(words[1], ('ACCEPT', []))[1].insert(0, words[3])
            elif words[0] == '-X':
                del chains[words[1]]

    def answer(self, command, data=None):
        """(rc, out, err) of one command (in tests.unit.plugins.fakes.key form), given its stdin."""
        family = 6 if command.startswith('ip6') else 4
        if command == '%s-save' % TOOLS[family]:
            return 0, self.save(family), ''
        if command.startswith('%s-restore --noflush' % TOOLS[family]):
            if command.endswith('--test'):
                return (1, '', 'test failed\n') if family in self.faults.test else (0, '', '')
            if family in self.faults.apply:
                return 1, '', 'iptables-restore: line 2 failed\n'
            self.applied.append(family)
            if family not in self.faults.ignore:
                self.restore(family, data)
            return 0, '', ''
        raise AssertionError('unexpected command: %s' % command)
