# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The nftables backend, reading: PRIVATE to this collection, no stable API.

Pure Python, no I/O. ``nft -j list ruleset`` (JSON, nft 1.0.6's schema 1) -> Live: our table in the
canonical form of rules.py (each rule printed back as the one line rules.py writes for it, so that a
live table and a desired one compare line by line: any extra rule, missing or changed element is a
difference), the rules of libvirt's ``forward`` chains with their handles, and which tables exist.

The printer knows the expressions rules.py writes and nothing more: anything else is printed as
``<not understood: {json}>``, which no rendered line equals, so it shows up as a difference and is
named in the plan's reasons (never executed, never written back).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from ansible_collections.kvmnet.nat.plugins.module_utils._backend import RulesetError
from ansible_collections.kvmnet.nat.plugins.module_utils.nftables.rules import (
    ACCEPT_COMMENT, LIBVIRT_CHAIN, LIBVIRT_FAMILIES, LIBVIRT_TABLE, Chain, NftSet, Table)

_BARE_META = ('iifname', 'oifname', 'iif', 'oif')
_VERDICTS = ('accept', 'drop', 'return', 'continue')


class _Unknown(Exception):
    pass


@dataclass
class Rule:
    handle: int
    text: str

    @property
    def ours(self):
        """Our accept rule is found by its comment, exactly as rules.py writes it."""
        return self.text.endswith(' comment "%s"' % ACCEPT_COMMENT)


@dataclass
class Live:
    """What a read found: ``table`` (ours, canonical, or None), ``libvirt`` ({'ip'/'ip6': [Rule] of its
    ``forward`` chain, or None when the table exists without that chain}; a family whose
    ``libvirt_network`` table does not exist is not there), ``tables`` (every (family, name))."""
    table: Table = None
    libvirt: dict = field(default_factory=dict)
    tables: list = field(default_factory=list)

    def accept_positions(self):
        """{'ip'/'ip6': [(0-based position, Rule)] of our accept rule} for every libvirt forward chain."""
        return {fam: [(pos, rule) for pos, rule in enumerate(rules) if rule.ours]
                for fam, rules in self.libvirt.items() if rules is not None}

# ---------------------------------------------------------------- expressions


def _hex(value):
    if isinstance(value, int) and not isinstance(value, bool):
        return '0x%08x' % value
    return _expr(value)


def _binop(op, args):
    if op in ('&', '|', '^') and isinstance(args, list) and len(args) == 2:
        return '%s %s %s' % (_expr(args[0]), op, _hex(args[1]))
    raise _Unknown()


def _element(value):
    if isinstance(value, list) and len(value) == 2:
        return '%s : %s' % (_expr(value[0]), _expr(value[1]))
    return _expr(value)


def _expr(value):
    """One expression of nft's JSON as rules.py writes it; _Unknown for anything else."""
    if isinstance(value, bool) or value is None:
        raise _Unknown()
    if isinstance(value, (int, str)):
        return str(value)
    if not (isinstance(value, dict) and len(value) == 1):
        raise _Unknown()
    (key, arg), = value.items()
    if key == 'payload' and isinstance(arg, dict) and set(arg) == {'protocol', 'field'}:
        return '%s %s' % (arg['protocol'], arg['field'])
    if key == 'meta' and isinstance(arg, dict) and set(arg) == {'key'}:
        return arg['key'] if arg['key'] in _BARE_META else 'meta %s' % arg['key']
    if key == 'ct' and isinstance(arg, dict) and set(arg) == {'key'}:
        return 'ct %s' % arg['key']
    if key == 'fib' and isinstance(arg, dict) and set(arg) == {'result', 'flags'} and isinstance(arg['flags'], list):
        return 'fib %s %s' % (' . '.join(str(f) for f in arg['flags']), arg['result'])
    if key == 'concat' and isinstance(arg, list):
        return ' . '.join(_expr(part) for part in arg)
    if key == 'prefix' and isinstance(arg, dict) and set(arg) == {'addr', 'len'}:
        return '%s/%s' % (_expr(arg['addr']), _expr(arg['len']))
    if key == 'range' and isinstance(arg, list) and len(arg) == 2:
        return '%s-%s' % (_expr(arg[0]), _expr(arg[1]))
    if key == 'set' and isinstance(arg, list):
        return '{ %s }' % ', '.join(_element(e) for e in arg)
    if key == 'map' and isinstance(arg, dict) and set(arg) == {'key', 'data'}:
        return '%s map %s' % (_expr(arg['key']), _expr(arg['data']))
    if key in ('jump', 'goto') and isinstance(arg, dict) and set(arg) == {'target'}:
        return '%s %s' % (key, arg['target'])
    if key in _VERDICTS and arg is None:
        return key
    return _binop(key, arg)


def _match(arg):
    if not (isinstance(arg, dict) and set(arg) == {'op', 'left', 'right'}):
        raise _Unknown()
    left, op, right = arg['left'], arg['op'], arg['right']
    text = _expr(left)
    binop = isinstance(left, dict) and len(left) == 1 and next(iter(left)) in ('&', '|', '^')
    if isinstance(right, str) and isinstance(left, dict) and left.get('meta', {}).get('key') in _BARE_META:
        right_text = '"%s"' % right
    else:
        right_text = _hex(right) if binop else _expr(right)
    if op == '==' and not binop:
        return '%s %s' % (text, right_text)
    return '%s %s %s' % (text, op, right_text)


def _nat(kind, arg):
    if not (isinstance(arg, dict) and set(arg) <= {'family', 'addr', 'port'} and 'addr' in arg):
        raise _Unknown()
    target = _expr(arg['addr'])
    if 'port' in arg:
        if isinstance(arg['addr'], str) and ':' in arg['addr']:
            target = '[%s]' % target
        target = '%s:%s' % (target, _expr(arg['port']))
    return '%s %s to %s' % (kind, arg['family'], target) if 'family' in arg else '%s to %s' % (kind, target)


def _statement(stmt):
    if not (isinstance(stmt, dict) and len(stmt) == 1):
        raise _Unknown()
    (key, arg), = stmt.items()
    if key == 'match':
        return _match(arg)
    if key == 'mangle' and isinstance(arg, dict) and set(arg) == {'key', 'value'}:
        return '%s set %s' % (_expr(arg['key']), _expr(arg['value']))
    if key in ('dnat', 'snat'):
        return _nat(key, arg)
    if key == 'masquerade' and arg is None:
        return 'masquerade'
    if key == 'vmap' and isinstance(arg, dict) and set(arg) == {'key', 'data'}:
        return '%s vmap %s' % (_expr(arg['key']), _expr(arg['data']))
    if key == 'counter' and (arg is None or isinstance(arg, dict)):
        return 'counter'      # its packets and bytes are no part of the rule
    return _expr(stmt)


def rule_text(rule):
    """A rule of nft's JSON as the one line rules.py writes (``<not understood: ...>`` otherwise)."""
    try:
        parts = [_statement(stmt) for stmt in rule.get('expr') or []]
    except (_Unknown, TypeError, KeyError, AttributeError):
        parts = ['<not understood: %s>' % json.dumps(rule.get('expr'), sort_keys=True)]
    if 'comment' in rule:       # kept either way: our accept rule is found by it, whatever it holds
        parts.append('comment "%s"' % rule['comment'])
    return ' '.join(parts)

# ---------------------------------------------------------------- sets, chains, tables


def _types(value):
    return tuple(value) if isinstance(value, list) else (value,)


def _typed(value, kinds):
    """A set element or map datum, quoted where its type is a name (``ifname``)."""
    parts = value['concat'] if isinstance(value, dict) and 'concat' in value and len(kinds) > 1 else [value]
    if len(parts) != len(kinds):
        raise _Unknown()
    return ' . '.join('"%s"' % p if kind == 'ifname' and isinstance(p, str) else _expr(p)
                      for p, kind in zip(parts, kinds))


def _set_of(obj, kind):
    """A set or map of nft's JSON -> (NftSet, problems): what the canonical form cannot hold is a line."""
    key = _types(obj.get('type'))
    data = _types(obj[kind]) if kind == 'map' else ()
    flags = obj.get('flags') or []
    extra = sorted(k for k in obj if k not in ('family', 'name', 'table', 'type', 'handle', 'map', 'flags', 'elem'))
    odd = ['%s %s has %s' % (kind, obj.get('name'), ', '.join(extra + [f for f in flags if f != 'interval']))] \
        if extra or set(flags) - {'interval'} else []
    elements = []
    for elem in obj.get('elem') or []:
        try:
            if kind == 'map':
                if not (isinstance(elem, list) and len(elem) == 2):
                    raise _Unknown()
                datum = _expr(elem[1]) if data == ('verdict',) else _typed(elem[1], data)
                elements.append('%s : %s' % (_typed(elem[0], key), datum))
            else:
                elements.append(_typed(elem, key))
        except (_Unknown, TypeError, KeyError, AttributeError):
            elements.append('<not understood: %s>' % json.dumps(elem, sort_keys=True))
    return NftSet(kind, key, data, 'interval' in flags, tuple(sorted(elements))), odd


def _chain_base(obj):
    if 'hook' not in obj:
        return ''
    return 'type %s hook %s priority %s; policy %s;' % (
        obj.get('type'), obj.get('hook'), obj.get('prio'), obj.get('policy', 'accept'))


def objects(text):
    """The list of objects of ``nft -j list ...`` output; RulesetError when it is not nft's JSON."""
    try:
        data = json.loads(text) if isinstance(text, (str, bytes)) else text
        items = data['nftables']
    except (ValueError, TypeError, KeyError) as exc:
        raise RulesetError('nft -j printed something that is not its JSON ruleset (%s)' % exc) from None
    if not isinstance(items, list) or not all(isinstance(item, dict) and len(item) == 1 for item in items):
        raise RulesetError('nft -j printed something that is not its JSON ruleset')
    return [next(iter(item.items())) for item in items]


def parse(text, name):
    """Live state from ``nft -j list ruleset`` output: our ``table inet <name>``, libvirt's chains."""
    live = Live()
    table = Table(name)
    sets, chains, rules, others = {}, {}, {}, []
    libvirt_chains = {}
    for kind, obj in objects(text):
        if not isinstance(obj, dict):
            continue
        family, tname = obj.get('family'), obj.get('table') if kind != 'table' else obj.get('name')
        if kind == 'table':
            live.tables.append((family, tname))
            continue
        if family == 'inet' and tname == name:
            if kind in ('set', 'map'):
                sets[obj.get('name')], odd = _set_of(obj, kind)
                others.extend(odd)
            elif kind == 'chain':
                chains[obj.get('name')] = _chain_base(obj)
            elif kind == 'rule':
                rules.setdefault(obj.get('chain'), []).append(rule_text(obj))
            else:
                others.append('%s %s' % (kind, json.dumps(obj, sort_keys=True)))
        elif tname == LIBVIRT_TABLE and family in dict(LIBVIRT_FAMILIES):
            if kind == 'chain' and obj.get('name') == LIBVIRT_CHAIN:
                libvirt_chains[family] = []
            elif kind == 'rule' and obj.get('chain') == LIBVIRT_CHAIN:
                libvirt_chains.setdefault(family, []).append(Rule(obj.get('handle'), rule_text(obj)))
    if ('inet', name) in live.tables:
        table.sets = sets
        table.chains = {chain: Chain(base, tuple(rules.get(chain, ()))) for chain, base in chains.items()}
        table.others = tuple(others)
        live.table = table
    for family, _n in LIBVIRT_FAMILIES:
        if (family, LIBVIRT_TABLE) in live.tables:
            live.libvirt[family] = libvirt_chains.get(family)
    return live
