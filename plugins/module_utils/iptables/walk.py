# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Follow one packet through iptables rules as the kernel would: PRIVATE to this collection, no stable API.

Pure Python, no I/O. Used by the doctor (where does this forward's packet stop, on any host,
rules written by hand included) and by the tests and the benchmark (does the dispatch tree take
the packet the flat chain would). Rules are ``iptables-save`` rule specs (after ``-A CHAIN``).

A packet is a dict. Keys (all optional; a missing value makes the tests that need it unknown):
``proto``; ``src`` and ``dst`` (address text); ``src_outside``: networks the source is known not to
be in (a client outside this host is in none of its networks); ``sport``, ``dport``; ``iface`` and
``oface`` (in and out interface, ``''`` when there is none); ``local``: the destination is an address
of this host; ``states``: conntrack states (default ``('NEW',)``, a DNATed first packet has
``('NEW', 'DNAT')``); ``origdst``, ``origdstport``, ``replsrc``: its conntrack entry (``origsrc``,
``repldst``, ``origsport``, ``repldport`` default to the packet's own source); ``ctdir``; ``varies``:
the keys whose value depends on which client sends the packet (``('src', 'sport')`` for any client).
A reply (from the guest back to the client) gives ``dst_outside`` instead of ``src_outside``: then the
client, outside this host's networks, is its destination and its conntrack entry's original source.

A test is True, False or None (cannot tell: an option this walker does not evaluate, or a value the
packet does not give). A rule matches when every test is True; a rule with a False test never does;
a rule that could match only through None tests is passed over and reported as uncertain, with what
it would do if it matched (its ``effect``) and whether it is only the client's values that are not
known (``varies``) or a match this walker does not read (``unknown``).

A ruleset is walked through a Ruleset: every rule parsed once, and in long chains the rules indexed
by destination port and address so that a walk tests only the rules that can match the packet.

A walk is a loop with an explicit stack: a loop in the rules, chains nested too deep or a walk longer
than ``limit`` rules end it with ``unfinished`` set, never with an exception. The walk of a built-in
chain that no rule ends ends in its policy (``policy=True``); a walk that starts in a user chain and
returns from it ends with target None. ``-j`` into a chain returns after it (a frame is kept), ``-g``
does not; RETURN leaves the chain.
"""

from __future__ import annotations

import functools
import heapq
import ipaddress
import re
import shlex
from dataclasses import dataclass, field

# targets that end the packet's walk through the table
TERMINAL = frozenset(('ACCEPT', 'DROP', 'REJECT', 'DNAT', 'SNAT', 'MASQUERADE', 'REDIRECT', 'NETMAP',
                      'QUEUE', 'NFQUEUE', 'SYNPROXY', 'TPROXY'))
# targets after which the packet goes on to the next rule
CONTINUE = frozenset(('LOG', 'NFLOG', 'ULOG', 'MARK', 'CONNMARK', 'CHECKSUM', 'TRACE', 'CT', 'TCPMSS', 'CLASSIFY',
                      'DSCP', 'TOS', 'TTL', 'HL', 'AUDIT', 'SECMARK', 'CONNSECMARK', 'TEE', 'NOTRACK', 'IDLETIMER',
                      'LED', 'SET', 'HMARK', 'RATEEST'))
STOPS = frozenset(('DROP', 'REJECT'))
# TPROXY ends the walk like ACCEPT (the kernel's tproxy target returns ACCEPT, or DROP when no socket listens)
# but hands the packet to a local proxy: it never goes on to where it was going. NFQUEUE (without
# --queue-bypass) and QUEUE hand it to a program, which decides; with none reading the queue, the kernel drops it.
LIMIT = 1000000         # rules a walk may pass before it gives up (no real ruleset comes near)
MAX_DEPTH = 64          # chains a walk may be nested in (iptables-nft allows 16)
_INDEX_FROM = 16        # chains this long are indexed by destination port and address

_NO_VALUE = frozenset(('--syn', '-f', '--fragment', '--rcheck', '--update', '--set', '--remove', '--rttl',
                       '--rsource', '--rdest', '--limit-iface-in', '--limit-iface-out', '--physdev-is-in',
                       '--physdev-is-out', '--physdev-is-bridged'))
_TWO_VALUES = frozenset(('--tcp-flags', '--match-set'))
_PROTOCOL_NUMBERS = {'6': 'tcp', '17': 'udp', '132': 'sctp', '1': 'icmp', '58': 'ipv6-icmp'}


@dataclass(frozen=True)
class Rule:
    tests: tuple          # (option, value, negated); value is a tuple for options with two words
    how: str | None       # '-j', '-g' or None (a rule without a target only counts packets)
    target: str | None
    target_args: tuple    # the words after the target (--to-destination ..., --reject-with ...)
    checks: tuple | None = field(default=None, compare=False, repr=False)   # (option, function, packet key, negated)
    keys: tuple = field(default=(), compare=False)   # ('dport' | 'origdstport' | 'dst', value) a match needs: the index

    def compiled(self):
        """The tests as functions of a prepared packet, made the first time the rule is evaluated."""
        if self.checks is None:
            object.__setattr__(self, 'checks', tuple((option,) + _compile(option, value) + (negated,)
                                                     for option, value, negated in self.tests))
        return self.checks

    def target_option(self, name):
        args = self.target_args
        for i, word in enumerate(args[:-1]):
            if word == name:
                return args[i + 1]
        return None

    @property
    def diverts(self):
        """'proxy' (TPROXY), 'queue' (QUEUE, NFQUEUE without --queue-bypass) or None: the rule takes the packet
        away from the way it was going, to a local socket or to a program in user space."""
        if self.target == 'TPROXY':
            return 'proxy'
        if self.target == 'QUEUE' or (self.target == 'NFQUEUE' and '--queue-bypass' not in self.target_args):
            return 'queue'
        return None

    @property
    def untracks(self):
        """The rule exempts the packet from connection tracking (raw table): no nat table sees it."""
        return self.target == 'NOTRACK' or (self.target == 'CT' and '--notrack' in self.target_args)


@dataclass
class Outcome:
    """Where the walk ended: ``target`` (a terminal target, a built-in chain's policy, or None when
    it left a user chain it started in); ``rule``: (chain, index from 1, spec) of the rule that ended
    it, None for a policy; ``path``: the rules taken on the way, jumps included, as (chain, index,
    spec); ``uncertain``: the rules passed over because a test could not be evaluated, as (chain,
    index, spec, option, kind, effect), kind 'unknown' or 'varies', effect 'stop', 'take', 'return'
    or 'pass' (what the rule would do to the packet if it matched); ``tested``: how many rules the
    packet was tested against; ``unfinished``: why the walk could not be finished ('' when it was);
    ``untracked``: the rule that exempted the packet from connection tracking, if one did."""
    target: str | None
    rule: tuple | None = None
    path: list = field(default_factory=list)
    uncertain: list = field(default_factory=list)
    tested: int = 0
    policy: bool = False
    unfinished: str = ''
    untracked: tuple | None = None

    @property
    def stopped(self):
        return self.target in STOPS


_TOKEN = re.compile(r'"([^"]*)"|(\S+)')


def _words(spec):
    if '\\' not in spec and "'" not in spec:        # what iptables-save prints: only double quotes, no escapes
        return [m.group(1) if m.group(2) is None else m.group(2) for m in _TOKEN.finditer(spec)]
    try:
        return shlex.split(spec)
    except ValueError:
        return spec.split()


def _target_index(words):
    """Where the target starts: iptables-save prints it last, after every match (a comment is skipped,
    so a comment reading "-j" is no target)."""
    i = 0
    while i < len(words):
        if words[i] == '--comment':
            i += 2
            continue
        if words[i] in ('-j', '--jump', '-g', '--goto'):
            return i
        i += 1
    return len(words)


def parse(spec):
    """One rule spec -> Rule. The target is found first, so a match this walker reads wrongly can make
    a test unknown but never hide the rule's target."""
    words = _words(spec)
    end = _target_index(words)
    how = target = None
    if end < len(words):
        how = '-g' if words[end] in ('-g', '--goto') else '-j'
        target = words[end + 1] if end + 1 < len(words) else None
    tests, negate, i = [], False, 0
    while i < end:
        word = words[i]
        if word == '!':
            negate = True
            i += 1
            continue
        if word in ('-m', '--match'):
            i += 2
            negate = False
            continue
        if word in _NO_VALUE:
            tests.append((word, None, negate))
            i += 1
        elif word in _TWO_VALUES:
            tests.append((word, tuple(words[i + 1:i + 3]), negate))
            i += 3
        else:
            tests.append((word, words[i + 1] if i + 1 < end else None, negate))
            i += 2
        negate = False
    return Rule(tuple(tests), how, target, tuple(words[end + 2:]), None, _index_keys(tests))


# for walks over plain {chain: [spec]} dicts (the tests) and the few rules the doctor reads again (a DNAT's
# destination): a Ruleset parses each of its rules once and does not use it
parsed = functools.lru_cache(maxsize=16384)(parse)


_KEY_OPTIONS = {'--dport': 'dport', '--destination-port': 'dport', '--ctorigdstport': 'origdstport',
                '-d': 'dst', '--destination': 'dst'}


def _index_keys(tests):
    """The values a packet must have for the rule to match: one port, or one address (a /32 or /128)."""
    keys = []
    for option, value, negated in tests:
        kind = _KEY_OPTIONS.get(option)
        if kind is None or negated or not value:
            continue
        if kind != 'dst':
            if value.isdigit():
                keys.append((kind, int(value)))
            continue
        found = network(value)
        if found is not None and found[3] == (32 if found[0] == 4 else 128):
            keys.append((kind, found[:2]))
    return tuple(keys)

# ---------------------------------------------------------------- the tests, compiled once per rule


@functools.lru_cache(maxsize=65536)
def network(text):
    """(version, network as int, netmask as int, prefix length) of an address or network, or None."""
    head, _sep, tail = text.partition('/')
    parts = head.split('.')
    if len(parts) == 4 and all(part.isdigit() and len(part) <= 3 for part in parts) and (not tail or tail.isdigit()):
        value = (int(parts[0]) << 24) | (int(parts[1]) << 16) | (int(parts[2]) << 8) | int(parts[3])
        plen = int(tail) if tail else 32
        if max(int(part) for part in parts) <= 255 and plen <= 32:
            mask = (0xffffffff << (32 - plen)) & 0xffffffff
            return 4, value & mask, mask, plen
    try:
        net = ipaddress.ip_network(text, strict=False)
    except (ValueError, TypeError):
        return None
    return net.version, int(net.network_address), int(net.netmask), net.prefixlen


def _address_check(key, text):
    found = network(text) if isinstance(text, str) else None
    if found is None:
        return _unknown
    version, base, mask, plen = found

    def check(p):
        ip = p['_ip'].get(key)
        if ip is None:
            if plen == 0:
                return True
            if key in p['_outside_keys'] and \
                    any(o[0] == version and o[3] <= plen and (base & o[2]) == o[1] for o in p['_outside']):
                return False
            return None
        return ip[0] == version and (ip[1] & mask) == base
    return check


def _port_check(key, text):
    ranges = []
    for item in (text or '').split(','):
        first, _sep, last = item.partition(':')
        try:
            ranges.append((int(first or 0), int(last or first or 65535)))
        except ValueError:
            return _unknown

    def check(p):
        port = p.get(key)
        if port is None:
            return None
        return any(lo <= port <= hi for lo, hi in ranges)
    return check


def _unknown(_p):
    return None


def _always(_p):
    return True


def _tcp_flags(packet, masks):
    if len(masks) != 2 or 'states' not in packet:
        return None
    flags = {'SYN'} if 'NEW' in packet['states'] else {'ACK'}
    mask = set(masks[0].split(',')) if masks[0] != 'ALL' else {'SYN', 'ACK', 'FIN', 'RST', 'URG', 'PSH'}
    compare = set(masks[1].split(',')) - {'NONE'}
    return (flags & mask) == compare


def _types_check(key, value):
    wanted = set((value or '').split(','))

    def check(p):
        local = p.get(key)
        if local is None:
            return None
        return bool(({'LOCAL', 'UNICAST'} if local else {'UNICAST'}) & wanted)
    return check


def _iface_check(key, value):
    value = value or ''
    prefix = value[:-1] if value.endswith('+') else None

    def check(p):
        name = p.get(key)
        if name is None:
            return None
        return name.startswith(prefix) if prefix is not None else name == value
    return check


def _proto_check(value):
    if value in ('all', '0'):
        return _always
    wanted = _PROTOCOL_NUMBERS.get(value, value)

    def check(p):
        proto = p.get('proto')
        return None if proto is None else proto == wanted
    return check


def _set_check(key, value, default):
    wanted = frozenset((value or '').split(','))

    def check(p):
        return bool(wanted.intersection(p.get(key, default)))
    return check


_ADDRESS_KEYS = {'-s': 'src', '--source': 'src', '-d': 'dst', '--destination': 'dst',
                 '--ctorigsrc': 'origsrc', '--ctorigdst': 'origdst', '--ctreplsrc': 'replsrc', '--ctrepldst': 'repldst'}
_PORT_KEYS = {'--dport': 'dport', '--destination-port': 'dport', '--sport': 'sport', '--source-port': 'sport',
              '--dports': 'dport', '--destination-ports': 'dport', '--sports': 'sport', '--source-ports': 'sport',
              '--ctorigdstport': 'origdstport', '--ctorigsrcport': 'origsport', '--ctrepldstport': 'repldport'}
# a packet of the original direction: its conntrack entry's original source (and the reply's destination,
# before any SNAT) is the packet's own source; a reply gives these keys itself
_ALIASES = (('origsrc', 'src'), ('repldst', 'src'), ('origsport', 'sport'), ('repldport', 'sport'))


def _compile(option, value):
    """(function(prepared packet) -> True, False or None, the packet key it reads or None)."""
    if option in _ADDRESS_KEYS:
        return _address_check(_ADDRESS_KEYS[option], value), _ADDRESS_KEYS[option]
    if option in _PORT_KEYS:
        return _port_check(_PORT_KEYS[option], value), _PORT_KEYS[option]
    if option in ('-i', '--in-interface'):
        return _iface_check('iface', value), 'iface'
    if option in ('-o', '--out-interface'):
        return _iface_check('oface', value), 'oface'
    if option in ('-p', '--protocol', '--ctproto'):
        return _proto_check(value), 'proto'
    if option in ('--ctstate', '--state'):
        return _set_check('states', value, ('NEW',)), None
    if option == '--ctstatus':
        return _set_check('ctstatus', value, ('NONE',)), None
    if option == '--ctdir':
        return _set_check('ctdir', value, ('ORIGINAL',)), None
    if option == '--dst-type':
        return _types_check('local', value), None
    if option == '--src-type':
        return _types_check('src_local', value), None
    if option in ('--comment', '--limit-iface-in', '--limit-iface-out'):
        return _always, None
    if option == '--syn':
        return (lambda p: 'NEW' in p['states'] if 'states' in p else None), None
    if option == '--tcp-flags':
        return (lambda p: _tcp_flags(p, value)), None
    return _unknown, None


def prepare(packet):
    """The packet with its addresses read once (the walker's own keys start with ``_``)."""
    if '_ip' in packet:
        return packet
    p = dict(packet)
    varies = set(packet.get('varies', ()))
    reply = 'dst_outside' in packet
    if not reply:
        for alias, key in _ALIASES:
            if alias not in p:
                p[alias] = packet.get(key)
                if key in varies:
                    varies.add(alias)
    ips = {}
    for key in ('src', 'dst', 'origdst', 'replsrc', 'origsrc', 'repldst'):
        found = network(p[key]) if isinstance(p.get(key), str) and '/' not in p[key] else None
        if found is not None:
            ips[key] = found[:2]
    p['_ip'] = ips
    # the client's addresses (which are in none of this host's networks): its source, or a reply's destination
    p['_outside'] = tuple((n.version, int(n.network_address), int(n.netmask), n.prefixlen)
                          for n in packet.get('dst_outside' if reply else 'src_outside', ()))
    p['_outside_keys'] = ('dst', 'origsrc', 'repldst') if reply else ('src', 'origsrc', 'repldst')
    p['_varies'] = frozenset(varies)
    return p


def test(option, value, packet):
    """One test of a rule against the packet: True, False or None (cannot tell)."""
    return _compile(option, value)[0](prepare(packet))


def _evaluate(rule, p):
    """(True, False or None, the first option that could not be evaluated, all of them only the client's)."""
    unknown, varies = None, True
    for option, check, key, negated in rule.checks if rule.checks is not None else rule.compiled():
        result = check(p)
        if result is None:
            unknown = unknown or option
            varies = varies and key is not None and key in p['_varies']
            continue
        if result == negated:
            return False, None, False
    return (True, None, False) if unknown is None else (None, unknown, varies)


def evaluate(rule, packet):
    """(True, False or None, the first option that could not be evaluated)."""
    return _evaluate(rule, prepare(packet))[:2]

# ---------------------------------------------------------------- the ruleset, indexed once


class _Chain:
    """A chain's rules, parsed; a long chain is indexed: each rule under the rarest value it needs (its
    destination port, original destination port or destination address), or with the free rules."""

    def __init__(self, specs, parser):
        self.specs = specs
        self.rules = [parser(spec) for spec in specs]
        self.indexed = len(specs) >= _INDEX_FROM
        if not self.indexed:
            return
        counts = {}
        for rule in self.rules:
            for key in rule.keys:
                counts[key] = counts.get(key, 0) + 1
        self.free, self.by = [], {kind: {} for kind in ('dport', 'origdstport', 'dst')}
        self.all = {kind: [] for kind in self.by}
        for i, rule in enumerate(self.rules):
            if not rule.keys:
                self.free.append(i)
                continue
            kind, value = min(rule.keys, key=counts.get)
            self.by[kind].setdefault(value, []).append(i)
            self.all[kind].append(i)

    def candidates(self, p):
        """Rule indexes (in order) that can match the packet, or None for all of them."""
        if not self.indexed:
            return None
        lists = [self.free] if self.free else []
        for kind, values in self.by.items():
            if not values:
                continue
            have = p['_ip'].get(kind) if kind == 'dst' else p.get(kind)
            found = self.all[kind] if have is None else values.get(have)
            if found:
                lists.append(found)
        if len(lists) <= 1:
            return lists[0] if lists else []
        return list(heapq.merge(*lists))


class Ruleset:
    """One table: ``rules`` {chain: [spec]} and ``policies`` {built-in chain: policy}; every rule is parsed
    once, when its chain is first entered."""

    def __init__(self, rules, policies=None, parser=parse):
        self.specs = rules
        self.policies = dict(policies or {})
        self._parser = parser
        self._chains = {}

    def chain(self, name):
        found = self._chains.get(name)
        if found is None and name in self.specs:
            found = self._chains[name] = _Chain(self.specs[name], self._parser)
        return found


def _effect(ruleset, rule, p, depth):
    """What a rule passed over would do to the packet if it matched: 'stop', 'take', 'return' or 'pass'."""
    target = rule.target
    if target in STOPS or rule.diverts or rule.untracks:
        return 'stop'
    if target in TERMINAL:
        return 'take'
    if target == 'RETURN':
        return 'return'
    if ruleset.chain(target) is None or depth >= MAX_DEPTH:
        return 'stop'                       # a target this walker does not know: it may drop
    inner = walk(ruleset, target, p, {}, _depth=depth + 1)
    if inner.unfinished or inner.stopped or inner.untracked or any(u[5] == 'stop' for u in inner.uncertain) or \
            (inner.rule is not None and parsed(inner.rule[2]).diverts):
        return 'stop'
    return 'take' if inner.target in TERMINAL else 'pass'


def _leave(out, frames, active, start, policies):
    """Leave the current chain (at its end, or by RETURN): the frame to go back to, or None when the walk ends
    (in the start chain's policy when it is a built-in chain)."""
    if not frames:
        if start in policies:
            out.target, out.policy = policies[start], True
        return None
    frame = frames.pop()
    del active[frame[5]:]
    return frame


def _gave_up(out, start, limit):
    out.unfinished = 'the walk from %s passed %d rules without an end (a loop in the rules?)' % (start, limit)
    return out


def _pass_over(out, ruleset, rule, here, unknown, varies, p, depth):
    """A rule that could match only through tests that cannot be told: reported as uncertain, with what it would
    do if it matched, unless it only counts, logs or marks."""
    if rule.target is not None and (rule.target not in CONTINUE or rule.untracks):
        out.uncertain.append(here + (unknown, 'varies' if varies else 'unknown', _effect(ruleset, rule, p, depth)))


def _taken(ruleset, out, here, rule, active, depth):
    """A rule that matched and does not let the packet go on to the next rule: 'end' (a terminal target ends the
    walk, or it cannot go on: a loop, chains nested too deep), 'return' (RETURN), 'pass' (a jump to no chain of
    this table, passed over as uncertain) or the chain to follow the jump into."""
    out.path.append(here)
    target = rule.target
    if target in TERMINAL:
        out.target, out.rule = target, here
        return 'end'
    if target == 'RETURN':
        return 'return'
    inner = ruleset.chain(target)
    if inner is None:                   # not a chain of this table, not a target this walker knows
        out.path.pop()
        out.uncertain.append(here + ('-j %s' % target, 'unknown', 'stop'))
        return 'pass'
    if target in active:
        out.rule = here
        out.unfinished = 'a loop in the rules: %s' % ' -> '.join(active + [target])
        return 'end'
    if len(active) + depth >= MAX_DEPTH:
        out.rule = here
        out.unfinished = 'chains nested more than %d deep at %s rule %d' % (MAX_DEPTH, here[0], here[1])
        return 'end'
    return inner


def walk(chains, start, packet, policies=None, limit=LIMIT, skip=(), _depth=0):
    """Follow ``packet`` from chain ``start`` through ``chains`` (a Ruleset, or {name: [spec]}); an Outcome.
    ``policies``: {built-in chain: policy} (a Ruleset's own by default); ``skip``: (chain, index from 1) of rules
    to pass over as if absent. How a walk goes and ends: this module's docstring ("A walk")."""
    ruleset = chains if isinstance(chains, Ruleset) else Ruleset(chains, policies, parsed)
    policies = ruleset.policies if policies is None else policies
    p, out, frames, active = prepare(packet), Outcome(None), [], [start]
    name, chain = start, ruleset.chain(start)
    cands, pos, nxt = chain.candidates(p) if chain else None, 0, 0
    while True:
        size = len(chain.specs) if chain else 0
        if cands is None:
            index = nxt if nxt < size else None
        else:
            while pos < len(cands) and cands[pos] < nxt:
                pos += 1
            index = cands[pos] if pos < len(cands) else None
        if index is None:
            out.tested += size - min(nxt, size)
        else:
            out.tested += index - nxt + 1
            nxt = index + 1
            if out.tested > limit:
                return _gave_up(out, start, limit)
            here = (name, index + 1, chain.specs[index])
            if skip and here[:2] in skip:
                continue
            rule = chain.rules[index]
            target, (matched, unknown, varies) = rule.target, _evaluate(rule, p)
            if matched is None:
                _pass_over(out, ruleset, rule, here, unknown, varies, p, _depth + len(active))
            if not matched or target is None or target in CONTINUE:
                if matched and rule.untracks and out.untracked is None:
                    out.untracked = here
                continue
            inner = _taken(ruleset, out, here, rule, active, _depth)
            if inner == 'end':
                return out
            if inner != 'return':
                if inner != 'pass':
                    if rule.how == '-j':
                        frames.append((name, chain, cands, pos, nxt, len(active)))
                    active.append(target)
                    name, chain, cands, pos, nxt = target, inner, inner.candidates(p), 0, 0
                continue
        frame = _leave(out, frames, active, start, policies)
        if frame is None:
            return out
        name, chain, cands, pos, nxt, _height = frame
