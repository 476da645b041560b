# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The nftables backend, the persisted copy: PRIVATE to this collection, no stable API.

Pure Python, no I/O. The file a restore loads at boot: a comment line, the header line (format,
backend, prefix, table, SHA-256 of the rest), then the script that builds our table from nothing
(``table inet X`` / ``delete table inet X`` / ``table inet X { ... }``). The accept rule is not in it:
libvirt's table does not exist at boot, and the libvirt network hook puts the rule back when libvirt
builds it (a plan against the live ruleset).

Reading it back refuses anything that is not exactly what the renderer writes: the checksum, the
header's fields, every set's name and type, every element and every rule matched against the forms
rules.py writes (nothing else ever reaches nft from a file), and the script rendered again from what
was parsed must be the body byte for byte.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re

from ansible_collections.kvmnet.nat.plugins.module_utils._backend import RulesetError
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables.rules import valid_prefix
from ansible_collections.kvmnet.nat.plugins.module_utils.nftables.plan import table_commands
from ansible_collections.kvmnet.nat.plugins.module_utils.nftables.rules import (
    BASE_CHAINS, DISPATCH, MASQUERADE_RULE, Chain, Desired, NftSet, Table, net, net_tag, table_name)

PERSIST_FORMAT = 1
HEADER = '# kvmnet-nat-restore '

# ---------------------------------------------------------------- the forms rules.py writes
_A4 = r'[0-9]{1,3}(?:\.[0-9]{1,3}){3}'
_A6 = r'[0-9a-f:]*:[0-9a-f:.]*'
_ADDR = r'(?:%s|%s)' % (_A4, _A6)
_NET = r'%s(?:/[0-9]{1,3})?' % _ADDR
_PORTS = r'[0-9]{1,5}(?:-[0-9]{1,5})?'
_PROTO = r'(?:tcp|udp|sctp)'
_IFACE = r'"[A-Za-z0-9_.@-]{1,15}\*?"'
_CHAIN = r'f_[0-9a-f]{16}'
_MARK = r'0x00[246]00000'
_FAM = r'(?:ip|ip6)'
_KEY = r'%s daddr \. meta l4proto \. th dport' % _FAM
_DEST = r'(?:%s|\[%s\])(?::[0-9]{1,5}|:%s dport map \{ [0-9]{1,5} : [0-9]{1,5}(?:, [0-9]{1,5} : [0-9]{1,5})* \})?' % (
    _A4, _A6, _PROTO)
_R = r'(?:_r)?'         # the interval half of a set split in two (rules.py's _split)
_TAG = r'[0-9a-f]{1,32}_[0-9]{1,3}'     # rules.net_tag
# What format 1 files saved before 2026-12-06 hold and the current renderer no longer writes (the nftables
# backend was not yet released; a file of that time still restores until the next run rewrites it): one
# hairpin set keyed on the guest network, its rule, and the masquerade on that mark alone.
_OLD_HAIRPIN_SET = r'hairpin[46]'
_OLD_RULES = [
    r'%s saddr \. %s @hairpin[46] ct mark set ct mark \| 0x00400000' % (_FAM, _KEY),
    r'ct mark & 0x00400000 == 0x00400000 masquerade',
]
_OLD = [re.compile(p, re.ASCII) for p in _OLD_RULES]
# the forms only the current renderer writes: never in one table with the old ones
_NEW_SET = re.compile(r'hairpin[46]_.*|src.*|.*_r', re.ASCII)
_DNAT = [r'%s%s @(?P<m>%s) ct mark set ct mark \| 0x00200000 dnat %s to %s map @(?P=m)' % (match, key, name, fam, key)
         for fam, n in (('ip', 4), ('ip6', 6))
         for match, key, name in (
             ('', r'%s daddr \. meta l4proto \. th dport' % fam, r'port%d|addr%d' % (n, n)),
             ('', r'%s daddr \. meta l4proto \. th dport \. %s saddr' % (fam, fam), r'srcaddr%d' % n),
             (r'meta l4proto \{ tcp, udp, sctp \} ', r'%s daddr \. meta l4proto \. th dport \. %s saddr' % (fam, fam),
              r'srcport%d%s' % (n, _R)))]
_RULES = [re.compile(p, re.ASCII) for p in [
    r'%s vmap @special[46]%s' % (_KEY, _R),
    r'%s saddr %s %s @hairpin[46]_%s%s ct mark set ct mark \| 0x00400000' % (_FAM, _NET, _KEY, _TAG, _R),
    r'%s @masq[46]%s ct mark set ct mark \| 0x00400000' % (_KEY, _R),
    r'meta nfproto ipv[46] iifname \. meta l4proto \. th dport vmap @iface[46]%s' % _R,
    r'meta nfproto ipv[46] iifname %s meta l4proto \. th dport vmap @wild[46]_[0-9]{1,4}%s' % (_IFACE, _R),
    r'(?:iifname %s )?meta l4proto %s(?: %s saddr (?:%s|\{ %s(?:, %s)* \}))?(?: %s saddr %s)? '
    r'ct mark set ct mark \| %s dnat %s to %s comment "[A-Za-z0-9 ._+:@/>-]{1,120}"'
    % (_IFACE, _PROTO, _FAM, _NET, _NET, _NET, _FAM, _NET, _MARK, _FAM, _DEST),
    r'jump dispatch',
    r'fib daddr type local jump dispatch',
    re.escape(MASQUERADE_RULE),
] + _DNAT + _OLD_RULES]
_SET_NAME = re.compile(r'(?:(?:special|masq|port|srcport|iface)[46]|hairpin[46]_%s|wild[46]_[0-9]{1,4})%s'
                       r'|(?:addr|srcaddr)[46]|%s' % (_TAG, _R, _OLD_HAIRPIN_SET), re.ASCII)
_ELEMENT = {
    'ipv4_addr': r'%s(?:/[0-9]{1,2})?' % _A4, 'ipv6_addr': r'%s(?:/[0-9]{1,3})?' % _A6, 'inet_proto': _PROTO,
    'inet_service': _PORTS, 'ifname': _IFACE, 'verdict': r'jump %s' % _CHAIN,
}


_HAIRPIN_RULE = re.compile(r'(ip6?) saddr (\S+) \1 daddr .* @hairpin([46])_(%s)(?:_r)? .*' % _TAG, re.ASCII)
_OLD_HAIRPIN_RULE = _OLD[0]


def _mixed(table):
    """Whether a table holds forms written before 2026-12-06 beside forms written since (no renderer did)."""
    rules = [r for chain in table.chains.values() for r in chain.rules]
    old = any(re.fullmatch(_OLD_HAIRPIN_SET, n) for n in table.sets) or any(p.fullmatch(r) for p in _OLD for r in rules)
    new = MASQUERADE_RULE in rules or any(_NEW_SET.fullmatch(n) for n in table.sets)
    return old and new


def _hairpin_problem(rule):
    """Whether a hairpin rule matches another network than the one its set is named after (rules.py
    writes ``ip saddr <net> ... @hairpin4_<net_tag(net)>``, the family's own); False for other rules."""
    found = _HAIRPIN_RULE.fullmatch(rule)
    if found is None and _OLD_HAIRPIN_RULE.fullmatch(rule):
        return False        # its network is in each element
    if found is None:
        return rule.startswith(('ip saddr', 'ip6 saddr')) and '@hairpin' in rule
    family, text, n, tag = found.groups()
    try:
        network = ipaddress.ip_network(text, strict=True)
    except ValueError:
        return True
    return (family, network.version) not in (('ip', 4), ('ip6', 6)) or n != str(network.version) \
        or net(network) != text or net_tag(network) != tag


def _element_re(found):
    key = r' \. '.join(_ELEMENT.get(t, '(?!)') for t in found.key)
    if not found.data:
        return re.compile(key, re.ASCII)
    return re.compile(key + ' : ' + r' \. '.join(_ELEMENT.get(t, '(?!)') for t in found.data), re.ASCII)


def check_table(table):
    """Problems of a Table that rules.py would not have written (names, types, elements, rules)."""
    problems = []
    for name, found in sorted(table.sets.items()):
        types = set(found.key) | set(found.data)
        if not _SET_NAME.fullmatch(name) or not types <= set(_ELEMENT) or found.kind not in ('set', 'map'):
            problems.append('%s %s of type %s' % (found.kind, name, found.type_text))
            continue
        pattern = _element_re(found)
        problems.extend('%s %s element %s' % (found.kind, name, e) for e in found.elements if not pattern.fullmatch(e))
    for name, chain in sorted(table.chains.items()):
        if chain.base != BASE_CHAINS.get(name, '') or not (name in BASE_CHAINS or name == DISPATCH or re.fullmatch(_CHAIN, name)):
            problems.append('chain %s %s' % (name, chain.base))
        problems.extend('chain %s rule %s' % (name, r) for r in chain.rules
                        if not any(p.fullmatch(r) for p in _RULES) or _hairpin_problem(r))
    if _mixed(table):
        problems.append('forms saved before 2026-12-06 beside forms saved since')
    return problems

# ---------------------------------------------------------------- the file


def persist_text(desired):
    """The saved file: two header lines, then the script that builds our table from nothing."""
    if desired.table is None:
        raise ValueError('there is no table to save')
    problems = check_table(desired.table)
    if problems:
        raise ValueError('refusing to save what kvmnet.nat would not write: %s' % problems[0])
    body = table_commands(desired.name, desired.table)
    header = '# Managed by kvmnet.nat: only its own table inet %s. Do not edit.\n' % desired.name
    meta = '%sformat=%d backend=nftables prefix=%s table=%s sha256=%s\n' % (
        HEADER, PERSIST_FORMAT, desired.prefix, desired.name, hashlib.sha256(body.encode('ascii')).hexdigest())
    return header + meta + body


def read_persisted(text):
    """(fields of the header line 2, body: every line after it); ``valid``: the body's SHA-256 matches."""
    lines = text.split('\n')
    if len(lines) < 3 or not lines[1].startswith(HEADER):
        return {'valid': False}, text
    fields = dict(word.split('=', 1) for word in lines[1][len(HEADER):].split(' ') if '=' in word)
    body = '\n'.join(lines[2:])
    fields['valid'] = fields.get('sha256') == hashlib.sha256(body.encode('utf-8', 'replace')).hexdigest()
    return fields, body


def _parse_body(body, name):
    """The Table a body describes, parsed by the shape the renderer writes (checked after)."""
    lines = body.split('\n')
    head = ['table inet %s' % name, 'delete table inet %s' % name, 'table inet %s {' % name]
    if lines[:3] != head:
        raise RulesetError('the saved script does not start by replacing table inet %s' % name)
    table, index = Table(name), 3
    while index < len(lines) and lines[index].startswith('\t') and lines[index].endswith(' {'):
        kind, obj = lines[index].strip()[:-2].split(' ', 1)
        index += 1
        if kind in ('set', 'map'):
            type_text = lines[index].strip()[len('type '):]
            index += 1
            interval = lines[index] == '\t\tflags interval'
            index += interval
            elements = []
            if lines[index].startswith('\t\telements = { '):
                chunk = [lines[index][len('\t\telements = { '):]]
                while not chunk[-1].endswith(' }'):
                    index += 1
                    chunk.append(lines[index].strip())
                chunk[-1] = chunk[-1][:-2]
                elements = [e.rstrip(',') for e in chunk]
                index += 1
            key, _sep, data = type_text.partition(' : ')
            table.sets[obj] = NftSet(kind, tuple(key.split(' . ')), tuple(data.split(' . ')) if data else (),
                                     interval, tuple(sorted(set(elements))))
        else:
            rules = []
            while lines[index] != '\t}':
                rules.append(lines[index][2:])
                index += 1
            base = rules.pop(0) if rules and rules[0].startswith('type ') else ''
            table.chains[obj] = Chain(base, tuple(rules))
        if lines[index] != '\t}':
            raise RulesetError('the saved script is not one kvmnet.nat writes (near line %d)' % (index + 4))
        index += 1
    return table


def desired_from_persisted(text, prefix):
    """The Desired a saved file describes; RulesetError unless it is intact, for ``prefix``, and exactly
    what the renderer writes (every line checked, the whole body rendered again and compared)."""
    fields, body = read_persisted(text)
    if not fields['valid']:
        raise RulesetError('the saved rules have no valid kvmnet-nat-restore header or their checksum does not match')
    name = table_name(prefix) if valid_prefix(prefix) else None
    expected = {'format': str(PERSIST_FORMAT), 'backend': 'nftables', 'prefix': prefix, 'table': name}
    wrong = ['%s=%s (expected %s)' % (k, fields.get(k), v) for k, v in sorted(expected.items()) if fields.get(k) != v]
    if wrong:
        raise RulesetError('the saved rules are not for this run: %s' % ', '.join(wrong))
    try:
        table = _parse_body(body, name)
    except (IndexError, ValueError):
        raise RulesetError('the saved script is not one kvmnet.nat writes (cut short or edited)') from None
    problems = check_table(table)
    if problems:
        raise RulesetError('the saved script holds what kvmnet.nat does not write: %s' % problems[0])
    if table_commands(name, table) != body:
        raise RulesetError('the saved script is not exactly what kvmnet.nat writes (edited)')
    return Desired(prefix=prefix, table=table)
