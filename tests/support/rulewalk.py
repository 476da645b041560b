# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The rule walker of the collection (plugins/module_utils/iptables/walk.py), held to the rules the engine writes.

For the tests and the benchmark: a packet walked through rendered rules must never meet an option
the walker cannot evaluate (that would hide a rendering mistake), so an uncertain rule is an error
here. A packet is a dict as _walk describes it.
"""

from __future__ import annotations

from ansible_collections.kvmnet.nat.plugins.module_utils.iptables import walk as _walk


def walk(chains, start, packet, limit=10000, count=False):
    """The spec of the first terminal rule the packet meets from chain ``start``, or None when it
    returns to the built-in chain that called ``start``. ``chains``: {name: [spec]}. With
    ``count``: (that rule, how many rules the packet was tested against on its way)."""
    out = _walk.walk(chains, start, packet, limit=limit)
    if out.unfinished:
        raise ValueError('rulewalk could not finish: %s' % out.unfinished)
    if out.uncertain:
        raise ValueError('rulewalk cannot evaluate %s in %s' % (out.uncertain[0][3], out.uncertain[0][2]))
    spec = out.rule[2] if out.rule else None
    return (spec, out.tested) if count else spec


def from_save(text, prefix='KVMNAT'):
    """{chain: [spec]} of the chains of ours in an iptables-save text."""
    chains = {}
    for line in text.splitlines():
        if line.startswith(':%s' % prefix):
            chains.setdefault(line[1:].split()[0], [])
        elif line.startswith('-A %s' % prefix):
            chain, spec = line[3:].split(' ', 1)
            chains.setdefault(chain, []).append(spec)
    return chains


def by_name(desired_chains):
    """{(table, chain): rules} -> {chain: rules}."""
    return {chain: rules for (_table, chain), rules in desired_chains.items()}
