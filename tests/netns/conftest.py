# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Shared by the namespace tests: the lab (one per test file and iptables flavour) and ruleset views."""

from __future__ import annotations

import pytest

from netlab import Lab

BUILTIN = ('PREROUTING', 'INPUT', 'FORWARD', 'OUTPUT', 'POSTROUTING')


def semantic(save_text):
    """Rules, user chains and non-default policies, per table, in order.

    An empty built-in chain with policy ACCEPT is no rule: iptables-nft creates the table's base
    chains when the first rule goes into it (e.g. the ip6 nat table) and they stay when it is emptied.
    """
    table, result = None, []
    for line in save_text.splitlines():
        if line.startswith('*'):
            table = line[1:]
        elif line.startswith('-A') or (line.startswith(':') and not (
                line[1:].split()[0] in BUILTIN and line.split()[1] == 'ACCEPT')):
            result.append('%s %s' % (table, line))
    return result


def others(save_text):
    """The rules that are not ours, in order (what must stay identical)."""
    return [line for line in semantic(save_text) if 'KVMNAT' not in line]


@pytest.fixture(scope='module', params=['nft', 'legacy'])
def lab(request):
    lab = Lab(request.param)
    try:
        lab.up()
        lab.baseline = {4: lab.save(4), 6: lab.save(6)}
        yield lab
    finally:
        lab.down()


def chain_rules(save_text, table, chain):
    return [line.split(' ', 1)[1] for line in semantic(save_text) if line.startswith('%s -A %s ' % (table, chain))]
