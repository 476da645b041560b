# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The nftables backend, on the host: PRIVATE to this collection, no stable API.

Reads our table and libvirt's with ``nft -j list tables`` and ``nft -j list table`` and loads a transaction with ``nft -f -`` (its text on
stdin), checked first with ``nft -c -f -``. Every command runs through _command.run (an argument
list, ``LANG=C``); a failure raises CommandError carrying the command, its stderr and, when nft names
one, the line of the transaction it refused.
"""

from __future__ import annotations

import json
import re

from ansible_collections.kvmnet.nat.plugins.module_utils._command import CommandError, failing_line, run
from ansible_collections.kvmnet.nat.plugins.module_utils.nftables.rules import LIBVIRT_FAMILIES, LIBVIRT_TABLE

_ERROR_LINE_RE = re.compile(r'/dev/stdin:(\d+):')


def _objects(module, nft, what):
    out = run(module, [nft, '-j', 'list'] + what, context='reading the nftables ruleset')[1]
    try:
        items = json.loads(out or '{}').get('nftables', [])
    except (ValueError, AttributeError):
        items = None
    if not isinstance(items, list):
        raise CommandError([nft, '-j', 'list'] + what, 0, out[:200], 'nft -j printed no JSON ruleset')
    return items


def list_ours(module, nft, name):
    """The part of ``nft -j list ruleset`` the backend reads: the tables (those ``nft -j list chains`` names),
    then our ``table inet <name>`` and libvirt's tables only. nft 1.0.6 reads every set's elements for
    ``list tables`` (0.2-0.4 s beside our table at 10 000 forwards), not for ``list chains``. A table
    without a chain is not seen: ours always has its base chains, libvirt's its own; an empty table of our
    name made by hand is replaced by the next transaction all the same (it begins ``table inet <name>;
    delete table inet <name>``)."""
    chains = _objects(module, nft, ['chains'])
    tables = []
    for item in chains:
        chain = item.get('chain') if isinstance(item, dict) else None
        if isinstance(chain, dict) and isinstance(chain.get('family'), str) and isinstance(chain.get('table'), str):
            if (chain['family'], chain['table']) not in tables:
                tables.append((chain['family'], chain['table']))
    items = [{'table': {'family': family, 'name': tname}} for family, tname in tables]
    for family, tname in tables:
        if (family, tname) == ('inet', name) or (tname == LIBVIRT_TABLE and family in dict(LIBVIRT_FAMILIES)):
            items.extend(obj for obj in _objects(module, nft, ['table', family, tname])
                         if isinstance(obj, dict) and not {'table', 'metainfo'} & set(obj))
    return {'nftables': items}


def load(module, nft, payload, test=False):
    """Load (or with test=True only check) one transaction; errors name the line nft refused."""
    cmd = [nft] + (['-c'] if test else []) + ['-f', '-']
    rc, out, err = run(module, cmd, data=payload, check=False)
    if rc != 0:
        context = 'applying the nftables transaction%s' % (' (check run)' if test else '')
        line = failing_line(payload, err, _ERROR_LINE_RE)
        if line:
            context += ', at "%s"' % line
        raise CommandError(cmd, rc, err or out, context)
