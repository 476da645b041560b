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
    """The part of ``nft -j list ruleset`` the backend reads: every table's name, our ``table inet <name>``
    and libvirt's tables (``nft -j list tables``, then only those). On a host with a large iptables-nft
    ruleset this reads a few objects instead of all of them."""
    tables = _objects(module, nft, ['tables'])
    items = [item for item in tables if isinstance(item, dict) and 'table' in item]
    for item in list(items):
        table = item['table'] if isinstance(item['table'], dict) else {}
        family, tname = table.get('family'), table.get('name')
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
