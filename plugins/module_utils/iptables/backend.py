# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The iptables backend as the converge driver sees it: PRIVATE to this collection, no stable API.

Engine and Backend of _backend.py over the modules of this package: detection and commands
(netfilter.py), reading (save.py), rendering (rules.py), planning (plan.py) and the saved file
(persisted.py). No logic of its own beyond wiring them together. The doctor's part is diagnose.py.
"""

from __future__ import annotations

from ansible_collections.kvmnet.nat.plugins.module_utils._backend import BackendUnavailable
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables import netfilter, persisted, plan, rules, save


class Engine:
    """iptables for one run: ``module`` runs the commands, ``prefix`` names our chains, ``lock_timeout``
    is handed to ``*-restore --wait`` (xtables' own lock)."""

    diff_header = 'managed iptables rules'
    scopes = (4, 6)
    saved_files = {'ipv4': 'v4', 'ipv6': 'v6'}

    def __init__(self, module, prefix, lock_timeout, legacy=netfilter.legacy_tables):
        self.module, self.prefix, self.lock_timeout, self.legacy = module, prefix, lock_timeout, legacy

    def problems(self):
        if rules.valid_prefix(self.prefix):
            return []
        return ['chain_prefix %r must be 1-16 upper-case letters or digits, starting with a letter' % (self.prefix,)]

    def open(self, family):
        tools = netfilter.detect(self.module, family, legacy=self.legacy)
        if tools is None:
            raise BackendUnavailable('this host has no %s-restore' % netfilter.TOOL[family])
        return Backend(self.module, tools, self.prefix, self.lock_timeout)

    def open_saved(self, family, text):
        """For a restore: the Backend of the flavour and the chain prefix a persisted file names (not
        this engine's), and the desired state the file describes. RulesetError when the file is not one
        kvmnet.nat wrote for ``family``; BackendUnavailable when the host lacks that flavour's tools."""
        fields = persisted.saved_header(text, family)
        tools = netfilter.tools_for(self.module, family, fields['flavour'])
        if tools is None:
            name = netfilter.TOOL[family] + ('' if fields['flavour'] == 'unknown' else '-' + fields['flavour'])
            raise BackendUnavailable('%s-save/-restore (the flavour the rules were applied with) not found' % name)
        backend = Backend(self.module, tools, fields['prefix'], self.lock_timeout, detected=False)
        return backend, backend.desired_from_persisted(text)


class Backend:
    """One family's iptables (the flavour its rules live in). ``live`` values are {table: save.Table};
    ``desired`` values are rules.Desired."""

    def __init__(self, module, tools, prefix, lock_timeout, detected=True):
        self.module, self.tools, self.prefix, self.lock_timeout = module, tools, prefix, lock_timeout
        self.family, self.flavour = tools.family, tools.flavour
        self.families, self.key = (tools.family,), 'ipv%d' % tools.family
        self._detected = detected   # the save taken while detecting is the first read

    def read(self):
        if self._detected:
            self._detected = False
            return save.parse_save(self.tools.saved)
        return save.parse_save(netfilter.save(self.module, self.tools))

    def desired(self, forwards):
        return rules.desired_state(forwards, self.family, self.prefix)

    def plan(self, live, desired):
        return plan.plan(live, desired)

    def test(self, plan_):
        netfilter.restore(self.module, self.tools, plan_.payload, self.lock_timeout, test=True)

    def apply(self, plan_):
        netfilter.restore(self.module, self.tools, plan_.payload, self.lock_timeout)

    def read_back(self, desired):
        return plan.plan(save.parse_save(netfilter.save(self.module, self.tools)), desired)

    def persisted_text(self, desired):
        return None if desired.empty else persisted.persist_text(desired, self.flavour)

    def read_persisted(self, text):
        return persisted.read_persisted(text)

    def desired_from_persisted(self, text):
        return persisted.desired_from_persisted(text, self.family, self.prefix)
