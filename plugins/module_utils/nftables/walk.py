# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Follow one packet through nftables rules as the kernel would: PRIVATE to this collection, no stable API.

Pure Python, no I/O. The doctor's walker for the nftables backend, over ``nft -j list ruleset`` (JSON):
every table of one IP family (``ip`` or ``ip6``, and ``inet``), ours, libvirt's and an admin's alike. A
packet is the dict of iptables/walk.py (``proto``, ``src``, ``dst``, ``dport``, ``iface``, ``oface``,
``states``, ``varies``, ...) plus ``ctmark``, the connection's mark (None: not known). A walk's result is
that module's Outcome; a rule is (chain, index from 1, text), the chain named ``chain FAMILY TABLE NAME``
(a policy is index 0, text ``policy drop``).

A hook is every base chain on it, of every table, in priority order, and nftables runs each of them: an
accept ends one base chain and the packet goes on to the next (another table's drop still drops it); a
drop or reject anywhere ends it. On a nat hook the first chain that NATs the packet ends it.

Evaluated: ``ip``/``ip6`` ``saddr``/``daddr``, ``meta l4proto``/``nfproto``/``iifname``/``oifname``/
``iif``/``oif``, ``ip protocol``, ``ip6 nexthdr``, ``tcp``/``udp``/``sctp``/``th`` ``dport``/``sport``,
``ct state``/``status``/``direction``/``mark`` (with a mask), ``fib daddr type``, concatenations, prefixes,
ranges, anonymous and named sets and maps, verdict maps; verdicts accept, drop, reject, jump, goto,
return, continue, the chain's policy; ``ct mark set``, dnat, snat, masquerade, redirect, notrack, queue,
tproxy. Anything else in a match makes the rule uncertain: passed over and reported with what it would do
if it matched (the doctor then says "cannot tell", never "ok" where the packet may stop).
"""

from __future__ import annotations

import ipaddress
import json

from ansible_collections.kvmnet.nat.plugins.module_utils.iptables.walk import Outcome
from ansible_collections.kvmnet.nat.plugins.module_utils.nftables import ruleset as _ruleset

MAX_DEPTH = 64
LIMIT = 1000000
TABLE_FAMILIES = {4: ('ip', 'inet', 'netdev'), 6: ('ip6', 'inet', 'netdev')}
_NAT = {'dnat': 'DNAT', 'snat': 'SNAT', 'masquerade': 'MASQUERADE', 'redirect': 'REDIRECT'}
_ENDS = {'accept': 'ACCEPT', 'drop': 'DROP', 'reject': 'REJECT', 'queue': 'NFQUEUE', 'tproxy': 'TPROXY'}
_XT_ENDS = {'REJECT': 'REJECT', 'DROP': 'DROP', 'ACCEPT': 'ACCEPT', 'NFQUEUE': 'NFQUEUE', 'TPROXY': 'TPROXY'}
# statements that neither stop a packet nor change what later matches see, as far as this walker reads them
_HARMLESS = ('counter', 'log', 'limit', 'quota', 'mangle', 'set', 'notrack')
_L4 = ('tcp', 'udp', 'sctp', 'udplite', 'dccp')
_FAMILY_WORD = {4: ('ip', 'ipv4'), 6: ('ip6', 'ipv6')}


class Unknown(Exception):
    """A match this walker cannot evaluate for this packet: ``option`` (its text), ``varies`` (only the
    client's address or port is missing)."""

    def __init__(self, option, varies=False):
        super().__init__(option)
        self.option, self.varies = option, varies


class _NoMatch(Exception):
    """The expression cannot hold for this packet (``ip saddr`` of an IPv6 packet, ``tcp dport`` of udp)."""

# ---------------------------------------------------------------- the ruleset of one family


class Chain:
    """One chain: ``id`` (``chain ip filter forward``), ``rules`` [(text, expr list, packets)], and for a base
    chain ``hook``, ``kind`` (filter, nat, route), ``prio`` and ``policy``."""

    def __init__(self, family, table, name, obj):
        self.family, self.table, self.name = family, table, name
        self.id = 'chain %s %s %s' % (family, table, name)
        self.hook, self.kind = obj.get('hook'), obj.get('type')
        prio = obj.get('prio', 0)
        self.prio = prio if isinstance(prio, int) else 0
        self.policy = obj.get('policy', 'accept')
        dev = obj.get('dev')
        self.devices = tuple(dev) if isinstance(dev, list) else (dev,) if dev else ()
        self.rules = []


def rule_text(rule):
    """A rule as nft would print it, as far as ruleset.py knows the expressions; the others as their JSON."""
    parts = []
    for stmt in rule.get('expr') or []:
        try:
            parts.append(_ruleset._statement(stmt))
        except (_ruleset._Unknown, TypeError, KeyError, AttributeError, ValueError):
            parts.append(_odd_text(stmt))
    if 'comment' in rule:
        parts.append('comment "%s"' % rule['comment'])
    return ' '.join(p for p in parts if p)


def _odd_text(stmt):
    if isinstance(stmt, dict) and 'reject' in stmt:
        return 'reject'
    if isinstance(stmt, dict) and isinstance(stmt.get('match'), dict) and isinstance(stmt['match'].get('right'), list):
        match = stmt['match']
        try:
            left = _ruleset._expr(match['left'])
        except (_ruleset._Unknown, TypeError, KeyError, AttributeError):
            left = json.dumps(match['left'], sort_keys=True)
        op = '' if match.get('op') in ('==', 'in') else match.get('op', '') + ' '
        return '%s %s%s' % (left, op, ','.join(str(v) for v in match['right']))
    return json.dumps(stmt, sort_keys=True)


class Ruleset:
    """The tables of one IP family (4 or 6) from ``nft -j list ruleset`` objects (ruleset.objects)."""

    def __init__(self, items, family):
        self.family = family
        self.chains, self.sets, self.tables = {}, {}, []
        for kind, obj in items:
            if not isinstance(obj, dict) or obj.get('family') not in TABLE_FAMILIES[family]:
                continue
            table = obj.get('name') if kind == 'table' else obj.get('table')
            key = (obj.get('family'), table)
            if kind == 'table':
                self.tables.append(key)
            elif kind == 'chain':
                self.chains[key + (obj.get('name'),)] = Chain(key[0], table, obj.get('name'), obj)
            elif kind in ('set', 'map'):
                self.sets[key + (obj.get('name'),)] = obj.get('elem') or []
            elif kind == 'rule' and key + (obj.get('chain'),) in self.chains:
                counter = next((s['counter'] for s in obj.get('expr') or [] if isinstance(s, dict)
                                and isinstance(s.get('counter'), dict)), {})
                self.chains[key + (obj.get('chain'),)].rules.append(
                    (rule_text(obj), obj.get('expr') or [], counter.get('packets')))

    def base(self, hook, kinds=None, before=None):
        """The base chains on ``hook`` in priority order; ``kinds``: 'nat' only those, '!nat' the others;
        ``before``: (True, n) only priorities below n, (False, n) the others."""
        found = [c for c in self.chains.values() if c.hook == hook and _kind_ok(c.kind, kinds)]
        if before is not None:
            found = [c for c in found if (c.prio < before[1]) == before[0]]
        return sorted(found, key=lambda c: (c.prio, c.family, c.table, c.name))

    def by_id(self, chain_id):
        return next((c for c in self.chains.values() if c.id == chain_id), None)


def _kind_ok(kind, kinds):
    if kinds is None:
        return True
    if kinds.startswith('!'):
        return kind != kinds[1:]
    return kind == kinds

# ---------------------------------------------------------------- values of the packet


def _addr_value(p, key, family):
    value = p.get(key)
    if value is None:
        raise Unknown('%s %s' % (_FAMILY_WORD[family][0], 'saddr' if key == 'src' else 'daddr'),
                      key in p.get('varies', ()) or ('%s_outside' % key) in p)
    return ipaddress.ip_address(value)


def _payload(arg, p, family):
    proto, fld = arg.get('protocol'), arg.get('field')
    if proto in ('ip', 'ip6'):
        if proto != _FAMILY_WORD[family][0]:
            raise _NoMatch()
        if fld in ('saddr', 'daddr'):
            return _addr_value(p, 'src' if fld == 'saddr' else 'dst', family)
        if fld in ('protocol', 'nexthdr'):
            return p.get('proto')
    if proto in _L4 + ('th',) and fld in ('dport', 'sport'):
        if proto != 'th' and p.get('proto') != proto:
            raise _NoMatch()
        value = p.get(fld)
        if value is None:
            raise Unknown('%s %s' % (proto, fld), fld in p.get('varies', ()))
        return value
    raise Unknown('%s %s' % (proto, fld))


_STATES = {'NEW': 'new', 'ESTABLISHED': 'established', 'RELATED': 'related', 'INVALID': 'invalid',
           'UNTRACKED': 'untracked'}


def _ct(key, p):
    if key == 'state':
        return frozenset(_STATES[s] for s in p.get('states', ('NEW',)) if s in _STATES)
    if key == 'status':
        return frozenset(['dnat'] if 'DNAT' in p.get('states', ()) else []) | \
            frozenset('seen-reply' if s == 'SEEN_REPLY' else s.lower() for s in p.get('ctstatus', ()))
    if key == 'direction':
        return 'reply' if 'REPLY' in p.get('ctdir', ()) else 'original'
    if key == 'mark':
        if p.get('ctmark') is None:
            raise Unknown('ct mark', bool(p.get('ctmark_varies')))
        return p['ctmark']
    raise Unknown('ct %s' % key)


def _meta(key, p, family):
    if key == 'l4proto':
        return p.get('proto')
    if key == 'protocol':                   # the ethertype (ip, ip6), not the transport protocol
        return _FAMILY_WORD[family][0]
    if key == 'nfproto':
        return _FAMILY_WORD[family][1]
    if key in ('iifname', 'iif', 'oifname', 'oif'):
        if key.startswith('o') and p.get('no_oif'):
            raise _NoMatch()        # prerouting: no output interface yet, the kernel's match breaks
        value = p.get('iface' if key.startswith('i') else 'oface')
        if value is None:
            raise Unknown('meta %s' % key)
        return value
    raise Unknown('meta %s' % key)


def value(expr, p, family):
    """The packet's value of a left-hand expression; Unknown or _NoMatch."""
    if not (isinstance(expr, dict) and len(expr) == 1):
        raise Unknown(json.dumps(expr, sort_keys=True))
    (key, arg), = expr.items()
    if key == 'payload' and isinstance(arg, dict):
        return _payload(arg, p, family)
    if key == 'meta' and isinstance(arg, dict):
        return _meta(arg.get('key'), p, family)
    if key == 'ct' and isinstance(arg, dict) and set(arg) == {'key'}:
        return _ct(arg['key'], p)
    if key == 'fib' and isinstance(arg, dict) and arg.get('result') == 'type' and arg.get('flags') == ['daddr']:
        return 'local' if p.get('local') else 'unicast'
    if key == 'concat' and isinstance(arg, list):
        return tuple(value(part, p, family) for part in arg)
    if key == '&' and isinstance(arg, list) and len(arg) == 2 and isinstance(arg[1], int):
        return value(arg[0], p, family) & arg[1]
    raise Unknown(_ruleset_text(expr))


def _ruleset_text(expr):
    try:
        return _ruleset._expr(expr)
    except (_ruleset._Unknown, TypeError, KeyError, AttributeError):
        return json.dumps(expr, sort_keys=True)

# ---------------------------------------------------------------- comparing


def _one(have, want):
    """Whether the value ``have`` is the element ``want`` (a scalar, prefix, range or wildcard name)."""
    if isinstance(want, dict) and 'prefix' in want:
        if not isinstance(have, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
            return False
        net = ipaddress.ip_network('%s/%s' % (want['prefix']['addr'], want['prefix']['len']), strict=False)
        return have.version == net.version and have in net
    if isinstance(want, dict) and 'range' in want:
        low, high = (_scalar(v, have) for v in want['range'])
        return type(low) is type(have) and low <= have <= high
    if isinstance(want, str) and isinstance(have, str) and want.endswith('*') and not want.endswith('\\*'):
        return have.startswith(want[:-1])
    return _scalar(want, have) == have


def _scalar(want, have):
    if isinstance(have, (ipaddress.IPv4Address, ipaddress.IPv6Address)) and isinstance(want, str):
        try:
            return ipaddress.ip_address(want)
        except ValueError:
            return want
    return want


def _element(have, want):
    """``have`` (a value or a tuple for a concatenation) is the set element ``want``."""
    if isinstance(want, dict) and 'elem' in want:
        want = want['elem'].get('val')
    if isinstance(have, tuple):
        parts = want.get('concat') if isinstance(want, dict) else None
        return isinstance(parts, list) and len(parts) == len(have) and all(_one(h, w) for h, w in zip(have, parts))
    return _one(have, want)


def _in_set(have, elements):
    for elem in elements:
        key = elem[0] if isinstance(elem, list) and len(elem) == 2 else elem
        if _element(have, key):
            return elem
    return None


def _compare(have, op, right, sets):
    """The match's truth for the packet's value ``have``."""
    if isinstance(right, str) and right.startswith('@'):
        hit = _in_set(have, sets.get(right[1:], []))
        return (hit is not None) == (op != '!=')
    if isinstance(have, frozenset):                 # ct state, ct status: flags
        wanted = set(right if isinstance(right, list) else [right])
        return bool(have & wanted) == (op != '!=')
    if isinstance(right, dict) and 'set' in right:
        return (_in_set(have, right['set']) is not None) == (op != '!=')
    if isinstance(right, list):
        return (_in_set(have, right) is not None) == (op != '!=')
    if op in ('<', '>', '<=', '>='):
        other = _scalar(right, have)
        return {'<': have < other, '>': have > other, '<=': have <= other, '>=': have >= other}[op]
    return _element(have, right) == (op != '!=')


def _outside(p, expr, right):
    """For an address the packet does not give (any client): False when ``right`` lies in networks the client
    is known not to be in (``src_outside``/``dst_outside``: this host's own networks), else None."""
    arg = expr.get('payload') if isinstance(expr, dict) else None
    if not isinstance(arg, dict) or arg.get('field') not in ('saddr', 'daddr'):
        return None
    nets = p.get('%s_outside' % ('src' if arg['field'] == 'saddr' else 'dst'))
    wants = right['set'] if isinstance(right, dict) and 'set' in right else [right]
    if not nets or not wants:
        return None
    for want in wants:
        try:
            text = '%s/%s' % (want['prefix']['addr'], want['prefix']['len']) if isinstance(want, dict) else want
            net = ipaddress.ip_network(text, strict=False)
        except (TypeError, KeyError, ValueError):
            return None
        if not any(net.version == n.version and net.subnet_of(n) for n in nets):
            return None
    return False


def _match(arg, p, family, sets):
    """True, False, or raises Unknown."""
    if not (isinstance(arg, dict) and {'left', 'right', 'op'} <= set(arg)):
        raise Unknown(json.dumps(arg, sort_keys=True))
    try:
        have = value(arg['left'], p, family)
    except _NoMatch:
        return False
    except Unknown:
        known = _outside(p, arg['left'], arg['right'])
        if known is None:
            raise
        return known == (arg['op'] != '!=')
    return _compare(have, arg['op'], arg['right'], sets)

# ---------------------------------------------------------------- one rule


class Step:
    """What one rule does to the packet: ``matched`` True/False/None (None: only through matches not
    evaluated, ``unknown`` the first, ``varies`` when only the client's values are missing); ``verdict``
    (accept, drop, reject, jump, goto, return, continue, vmap, DNAT...), ``target`` (a chain), ``mark``
    (the ct mark the rule sets), ``dest`` (a NAT rule's address and port), ``untracks``."""

    def __init__(self):
        self.matched, self.unknown, self.varies = True, None, True
        self.verdict, self.target, self.mark, self.dest, self.untracks = None, None, None, None, False


def _doubt(step, exc):
    if step.unknown is None:
        step.unknown = exc.option
    step.varies = step.varies and exc.varies
    step.matched = None


def _nat_dest(kind, arg, p, family, sets):
    """(address text or None, port or None) a NAT statement sends the packet to (dnat, redirect)."""
    if kind == 'redirect':
        return 'this host', arg.get('port') if isinstance(arg, dict) else None
    if not isinstance(arg, dict):
        return None, None
    addr, port = arg.get('addr'), arg.get('port')
    if isinstance(addr, dict) and 'map' in addr:
        hit = _in_set(value(addr['map']['key'], p, family), sets.get(str(addr['map']['data'])[1:], []))
        data = hit[1] if hit is not None else None
        parts = data.get('concat') if isinstance(data, dict) else [data]
        addr, port = parts[0], parts[1] if len(parts) > 1 else port
    if isinstance(port, dict) and 'map' in port:
        hit = _in_set(value(port['map']['key'], p, family), port['map']['data'].get('set', []))
        port = hit[1] if hit is not None else None
    return (addr if isinstance(addr, str) else None), (port if isinstance(port, int) else None)


def _statement(step, stmt, p, family, sets):
    """Apply one statement; returns False when the rule stops matching."""
    (key, arg), = stmt.items()
    if key == 'match':
        try:
            return _match(arg, p, family, sets)
        except Unknown as exc:
            _doubt(step, exc)
            return True
    if key in ('limit', 'quota'):
        _doubt(step, Unknown(key))
    elif key == 'mangle' and isinstance(arg, dict) and arg.get('key') == {'ct': {'key': 'mark'}}:
        step.mark = _mark_value(arg.get('value'), p)
    elif key == 'notrack':
        step.untracks = True
    elif key in ('jump', 'goto'):
        step.verdict, step.target = key, arg.get('target') if isinstance(arg, dict) else None
    elif key == 'vmap':
        step.verdict, step.target = 'vmap', arg
    elif key in _NAT:
        step.verdict, step.dest = _NAT[key], _nat_dest(key, arg, p, family, sets) if step.matched else (None, None)
    elif key in _ENDS or key in ('return', 'continue'):
        step.verdict = _ENDS.get(key, key)
    elif key == 'xt':
        # iptables-nft's matches and targets nft cannot translate (conntrack, set, iprange, mac, REJECT...): their
        # options are not in the JSON, so a match is not known to hold and a target's verdict is by its name
        name = arg.get('name') if isinstance(arg, dict) else None
        if isinstance(arg, dict) and arg.get('type') == 'target' and name in _XT_ENDS:
            step.verdict = _XT_ENDS[name]
        else:
            _doubt(step, Unknown('xt %s %s' % (arg.get('type') if isinstance(arg, dict) else '?', name)))
    elif key not in _HARMLESS:
        _doubt(step, Unknown(json.dumps(stmt, sort_keys=True)))
    return True


def _mark_value(expr, p):
    base = p.get('ctmark')
    if isinstance(expr, int):
        return expr
    if isinstance(expr, dict) and isinstance(expr.get('|'), list) and len(expr['|']) == 2 and isinstance(expr['|'][1], int):
        return (base or 0) | expr['|'][1]
    return None


def evaluate(expr_list, p, family, sets):
    """One rule against the packet: a Step."""
    step = Step()
    for stmt in expr_list:
        if not (isinstance(stmt, dict) and len(stmt) == 1):
            _doubt(step, Unknown(json.dumps(stmt, sort_keys=True)))
            continue
        try:
            if not _statement(step, stmt, p, family, sets):
                step.matched = False
                return step
        except (Unknown, _NoMatch, KeyError, TypeError, AttributeError, IndexError, ValueError) as exc:
            _doubt(step, exc if isinstance(exc, Unknown) else Unknown(json.dumps(stmt, sort_keys=True)))
    return step

# ---------------------------------------------------------------- one chain, one hook


def _vmap(step, p, family, sets):
    """The verdict a verdict map gives the packet: ('jump', chain), ('accept', None), ... or None (no element)."""
    arg = step.target
    data = arg.get('data')
    elements = sets.get(data[1:], []) if isinstance(data, str) and data.startswith('@') else \
        data.get('set', []) if isinstance(data, dict) else []
    hit = _in_set(value(arg.get('key'), p, family), elements)
    if hit is None:
        return None
    verdict = hit[1]
    if isinstance(verdict, dict) and len(verdict) == 1:
        (word, target), = verdict.items()
        return word, target.get('target') if isinstance(target, dict) else None
    return str(verdict), None


def _effect(rs, chain, step, seen=None):
    """What an uncertain rule would do if it matched: stop, take, return or pass."""
    verdict = step.verdict
    if verdict in ('DROP', 'REJECT'):
        return 'stop'
    if verdict in ('ACCEPT', 'NFQUEUE', 'TPROXY', 'vmap') or verdict in _NAT.values():
        return 'take'
    if verdict == 'return':
        return 'return'
    if verdict in ('jump', 'goto'):
        seen = seen or set()
        inner = rs.chains.get((chain.family, chain.table, step.target))
        if inner is None or inner.id in seen:
            return 'pass'
        seen.add(inner.id)
        effects = {_effect(rs, inner, _bare(exprs), seen) for _text, exprs, _n in inner.rules}
        return 'stop' if 'stop' in effects else 'take' if 'take' in effects else 'pass'
    return 'pass'


def _bare(exprs):
    """The verdict of a rule whatever its matches (for _effect)."""
    step = Step()
    for stmt in exprs:
        if isinstance(stmt, dict) and len(stmt) == 1:
            (key, arg), = stmt.items()
            if key in ('jump', 'goto') and isinstance(arg, dict):
                step.verdict, step.target = key, arg.get('target')
            elif key in _ENDS or key in _NAT or key == 'return':
                step.verdict = _ENDS.get(key, _NAT.get(key, key))
            elif key == 'vmap':
                step.verdict = 'vmap'
    return step


class _Walk:
    """The state of one walk through one base chain."""

    def __init__(self, rs, chain, p, skip, limit):
        self.rs, self.p, self.skip, self.limit = rs, dict(p), skip, limit
        self.out, self.frames, self.chain, self.index = Outcome(None), [], chain, 0
        self.base = chain

    def sets(self):
        return {name: elems for (fam, table, name), elems in self.rs.sets.items()
                if (fam, table) == (self.chain.family, self.chain.table)}

    def enter(self, how, name, here):
        inner = self.rs.chains.get((self.chain.family, self.chain.table, name))
        if inner is None:
            self.out.unfinished = '%s goes to chain %s, which is not there' % (here[0], name)
            return False
        self.out.path.append(here)
        if how == 'jump':
            self.frames.append((self.chain, self.index))
        if len(self.frames) > MAX_DEPTH:
            self.out.unfinished = 'chains nested more than %d deep' % MAX_DEPTH
            return False
        self.chain, self.index = inner, 0
        return True

    def leave(self):
        """The end of a chain (or return): back to the caller; False at the end of the base chain."""
        if not self.frames:
            return False
        self.chain, self.index = self.frames.pop()
        return True

    def end(self, target, rule, policy=False):
        self.out.target, self.out.rule, self.out.policy = target, rule, policy
        if rule is not None and not policy:
            self.out.path.append(rule)
        return self.out


def _verdict(w, step, here):
    """Act on a matched rule's verdict: the Outcome when it ends the walk, else None."""
    verdict, target = step.verdict, step.target
    if verdict == 'vmap':
        found = _vmap(step, w.p, w.rs.family, w.sets())
        if found is None:
            return None
        verdict, target = found
        verdict = _ENDS.get(verdict, verdict)
    if verdict in ('jump', 'goto'):
        return None if w.enter(verdict, target, here) else w.out
    if verdict == 'return':
        return None if w.leave() else w.end(w.base.policy.upper(), (w.base.id, 0, 'policy %s' % w.base.policy), True)
    if verdict in _ENDS.values() or verdict in _NAT.values():
        if step.dest is not None:
            here = here[:2] + ('%s [-> %s]' % (here[2], _dest_text(step.dest)),)
        return w.end(verdict, here)
    return None


def _dest_text(dest):
    addr, port = dest
    if addr is None:
        return 'no element'
    shown = '[%s]' % addr if ':' in addr and port is not None else addr
    return '%s:%d' % (shown, port) if port is not None else shown


def walk_chain(rs, chain, p, skip=(), limit=LIMIT):
    """Follow ``p`` through base chain ``chain``: (Outcome, the ct mark after it)."""
    w = _Walk(rs, chain, p, skip, limit)
    while True:
        if w.index >= len(w.chain.rules):
            if w.leave():
                continue
            return w.end(w.base.policy.upper(), (w.base.id, 0, 'policy %s' % w.base.policy), True), w.p.get('ctmark')
        text, exprs, _n = w.chain.rules[w.index]
        here = (w.chain.id, w.index + 1, text)
        w.index += 1
        w.out.tested += 1
        if w.out.tested > limit:
            w.out.unfinished = 'more than %d rules' % limit
            return w.out, w.p.get('ctmark')
        if here[:2] in skip:
            continue
        step = evaluate(exprs, w.p, rs.family, w.sets())
        if step.matched is None:
            if step.verdict is not None or step.mark is not None:
                w.out.uncertain.append(here + (step.unknown, 'varies' if step.varies else 'unknown',
                                               _effect(rs, w.chain, step)))
            continue
        if not step.matched:
            continue
        if step.mark is not None:
            w.p['ctmark'] = step.mark
        if step.untracks:
            w.out.untracked = here
        try:
            ended = _verdict(w, step, here)
        except _NoMatch:
            continue            # a verdict map keyed on the other family's address: no element
        except Unknown as exc:
            w.out.uncertain.append(here + (exc.option, 'varies' if exc.varies else 'unknown', 'take'))
            continue
        if ended is not None:
            return ended, w.p.get('ctmark')
        if w.out.unfinished:
            return w.out, w.p.get('ctmark')


# The doctor's stages (the iptables tables and chains it walks in the kernel's order) and the base chains
# of every table that sit there: (hook, chain type, (below a priority?, priority) or None, the packet has
# no output interface yet). Prerouting chains that run after nat's DNAT (priority -100) see the DNATed
# packet: they are walked with it, where the iptables backend walks mangle FORWARD.
STAGES = {
    ('raw', 'PREROUTING'): ('prerouting', '!nat', (True, -200), True),
    ('mangle', 'PREROUTING'): ('prerouting', '!nat', None, True),
    ('nat', 'PREROUTING'): ('prerouting', 'nat', None, True),
    ('mangle', 'FORWARD'): ('prerouting', '!nat', (False, -100), True),
    ('filter', 'FORWARD'): ('forward', None, None, False),
    ('mangle', 'POSTROUTING'): ('postrouting', '!nat', None, False),
    ('nat', 'POSTROUTING'): ('postrouting', 'nat', None, False),
    ('nat', 'OUTPUT'): ('output', 'nat', None, False),
}


def stage_chains(rs, table, chain):
    """The base chains of the doctor's stage (table, chain), in the order the kernel runs them; None for a
    stage the nftables backend does not have (security: every forward-hook chain is in filter FORWARD)."""
    spec = STAGES.get((table, chain))
    if spec is None:
        return None
    hook, kinds, before, _no_out = spec
    chains = rs.base(hook, kinds, before)
    if (table, chain) == ('raw', 'PREROUTING'):
        chains = rs.base('ingress') + chains       # ingress (netdev, inet) runs before every prerouting chain
    if (table, chain) == ('mangle', 'PREROUTING'):
        chains = [c for c in chains if -200 <= c.prio < -100]
    return chains


def _pick(accepts):
    """The accept that lets the packet through a hook, as the doctor names it: kvmnet.nat's accept rule,
    else the first accept rule, else the last policy."""
    ours = [o for o in accepts if o.rule and 'comment "kvmnet.nat: accept"' in o.rule[2]]
    rules = [o for o in accepts if not o.policy]
    return (ours or rules or accepts)[-1 if not (ours or rules) else 0]


def hook(rs, table, chain, p, skip=(), limit=LIMIT):
    """The packet's way through every base chain of stage (table, chain): an Outcome. An accept ends one
    base chain and the next runs; a drop, reject or queue ends the hook; on nat, so does the first NAT."""
    spec = STAGES.get((table, chain))
    chains = stage_chains(rs, table, chain) or []
    p = dict(p, no_oif=bool(spec and spec[3]))
    if 'ctmark' not in p:
        p['ctmark'] = connection_mark(rs, p)
    merged, accepts, mark = Outcome(None), [], p.get('ctmark')
    for base in chains:       # the path is the deciding base chain's (how the doctor names the rule)
        if base.devices and p.get('iface') is not None and p['iface'] not in base.devices:
            continue            # an ingress chain of another device
        out, mark = walk_chain(rs, base, dict(p, ctmark=mark), skip, limit)
        merged.uncertain.extend(out.uncertain)
        merged.tested += out.tested
        merged.untracked = merged.untracked or out.untracked
        if out.unfinished:
            merged.unfinished = out.unfinished
            return merged
        if out.target == 'ACCEPT':
            accepts.append(out)
            continue
        merged.target, merged.rule, merged.policy, merged.path = out.target, out.rule, out.policy, out.path
        return merged
    if not accepts:
        merged.target, merged.rule, merged.policy = 'ACCEPT', ('hook %s' % (spec[0] if spec else chain.lower()), 0,
                                                               'no base chain takes it'), True
        return merged
    chosen = _pick(accepts)
    merged.target, merged.rule, merged.policy, merged.path = 'ACCEPT', chosen.rule, chosen.policy, chosen.path
    return merged


def connection_mark(rs, p):
    """The ct mark of the packet's connection: what nat prerouting (ours: the dispatch) set on its first
    packet from the client; None when that cannot be told."""
    if 'REPLY' in p.get('ctdir', ()):
        first = {'proto': p.get('proto'), 'src': p.get('origsrc', p.get('dst')), 'dst': p.get('origdst'),
                 'dport': p.get('origdstport'), 'iface': p.get('oface'), 'src_outside': p.get('dst_outside'),
                 'varies': ('src', 'sport') + (('dport',) if p.get('origdstport') is None else ())}
    elif 'origdst' in p:
        first = dict(p, dst=p['origdst'], dport=p.get('origdstport'))
    else:
        return 0 if 'DNAT' not in p.get('states', ()) else None
    first.update(local=True, oface=None, no_oif=True, states=('NEW',), ctmark=0)
    for key in ('origdst', 'origdstport', 'ctdir', 'ctstatus', 'origsrc', 'replsrc', 'repldst', 'dst_outside', 'sport'):
        first.pop(key, None)
    mark = 0
    for base in stage_chains(rs, 'nat', 'PREROUTING'):
        out, mark = walk_chain(rs, base, dict(first, ctmark=mark))
        if out.uncertain and any(item[5] == 'take' for item in out.uncertain):
            return None
        if out.target != 'ACCEPT':
            break
    return mark
