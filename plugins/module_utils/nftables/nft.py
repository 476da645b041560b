# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The nftables backend, on the host: PRIVATE to this collection, no stable API.

Reads the ruleset with ``nft -j list ruleset`` and loads a transaction with ``nft -f -`` (its text on
stdin), checked first with ``nft -c -f -``. Every command runs through _command.run (an argument
list, ``LANG=C``); a failure raises CommandError carrying the command, its stderr and, when nft names
one, the line of the transaction it refused.
"""

from __future__ import annotations

import re

from ansible_collections.kvmnet.nat.plugins.module_utils._command import CommandError, failing_line, run

_ERROR_LINE_RE = re.compile(r'/dev/stdin:(\d+):')


def list_ruleset(module, nft):
    return run(module, [nft, '-j', 'list', 'ruleset'], context='reading the nftables ruleset')[1]


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
