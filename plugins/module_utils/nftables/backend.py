# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The nftables backend as the converge driver sees it: PRIVATE to this collection, no stable API.

Engine and Backend of _backend.py over the modules of this package. One table holds both families and
is replaced in one transaction, so there is ONE Backend for both: ``families = (4, 6)``, ``key =
'inet'`` (where the iptables backend has one per family, ``key = 'ipv4'``/``'ipv6'``), and the Engine
lists what ``open`` takes in ``scopes = ('inet',)``; the driver (_converge.py) loops over the scopes.
"""

from __future__ import annotations

from ansible_collections.kvmnet.nat.plugins.module_utils._backend import BackendUnavailable, RulesetError
from ansible_collections.kvmnet.nat.plugins.module_utils.nftables import nft, persisted, plan, rules, ruleset

SCOPE = 'inet'


class Engine:
    """nftables for one run: ``module`` runs the commands, ``prefix`` (the chain prefix) names our table."""

    diff_header = 'kvmnet.nat nftables table and accept rules'
    scopes = (SCOPE,)
    saved_files = {SCOPE: 'nft'}

    def __init__(self, module, prefix):
        self.module, self.prefix = module, prefix

    def problems(self):
        try:
            rules.table_name(self.prefix)
        except ValueError as exc:
            return [str(exc)]
        return []

    def table(self):
        """Our table's name (ValueError for a prefix ``problems`` names)."""
        return rules.table_name(self.prefix)

    def _nft(self):
        found = self.module.get_bin_path('nft')
        if not found:
            raise BackendUnavailable('this host has no nft')
        return found

    def open(self, scope=SCOPE):
        if scope != SCOPE:
            raise BackendUnavailable('the nftables backend has one table for both families, not one per family')
        return Backend(self.module, self._nft(), self.prefix)

    def open_saved(self, scope, text):
        """(Backend of the prefix the file names, the Desired it describes); RulesetError when the file
        is not one kvmnet.nat wrote, BackendUnavailable without nft."""
        fields, _body = persisted.read_persisted(text)
        prefix = fields.get('prefix')
        if not fields['valid'] or fields.get('backend') != 'nftables' or not rules.valid_prefix(prefix):
            raise RulesetError('not an intact nftables file of kvmnet.nat (header or checksum)')
        if scope != SCOPE:
            raise BackendUnavailable('the nftables backend has one table for both families, not one per family')
        backend = Backend(self.module, self._nft(), prefix)
        return backend, backend.desired_from_persisted(text)


class Backend:
    """Both families in ``table inet <name>``. ``live`` values are ruleset.Live; ``desired``, rules.Desired."""

    families = (4, 6)
    family = None           # both: see ``families``
    key = SCOPE
    flavour = 'nftables'

    def __init__(self, module, nft_path, prefix):
        self.module, self.nft, self.prefix = module, nft_path, prefix
        self.name = rules.table_name(prefix)

    def read(self):
        return ruleset.parse(nft.list_ours(self.module, self.nft, self.name), self.name)

    def desired(self, forwards):
        try:
            return rules.desired_state(forwards, self.prefix)
        except ValueError as exc:       # what the renderer refuses to write (rules.py re-checks every value)
            raise RulesetError(str(exc)) from None

    def plan(self, live, desired):
        return plan.plan(live, desired)

    def test(self, plan_):
        nft.load(self.module, self.nft, plan_.payload, test=True)

    def apply(self, plan_):
        nft.load(self.module, self.nft, plan_.payload)

    def read_back(self, desired):
        return plan.plan(self.read(), desired)

    def persisted_text(self, desired):
        return None if desired.empty else persisted.persist_text(desired)

    def read_persisted(self, text):
        return persisted.read_persisted(text)

    def desired_from_persisted(self, text):
        return persisted.desired_from_persisted(text, self.prefix)

    def hooks(self, live):
        """{(family, 'libvirt_network forward'): [1-based positions of our accept rule]} for every libvirt
        forward chain that exists; [1] is in place. (For the doctor's Diagnosis of this backend, issue 21.)"""
        return {(family, '%s %s' % (rules.LIBVIRT_TABLE, rules.LIBVIRT_CHAIN)): [pos + 1 for pos, _rule in found]
                for family, found in live.accept_positions().items()}
