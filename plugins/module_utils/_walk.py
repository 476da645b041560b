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
``('NEW', 'DNAT')``); ``origdst``, ``origdstport``, ``replsrc``: its conntrack entry.

A test is True, False or None (cannot tell: an option this walker does not evaluate, or a value the
packet does not give). A rule matches when every test is True; a rule with a False test never does;
a rule that could match only through None tests is passed over and reported as uncertain.
"""

from __future__ import annotations

import functools
import ipaddress
import shlex
from dataclasses import dataclass, field

# targets that end the packet's walk through the table
TERMINAL = frozenset(('ACCEPT', 'DROP', 'REJECT', 'DNAT', 'SNAT', 'MASQUERADE', 'REDIRECT', 'NETMAP',
                      'QUEUE', 'NFQUEUE', 'SYNPROXY'))
# targets after which the packet goes on to the next rule
CONTINUE = frozenset(('LOG', 'NFLOG', 'ULOG', 'MARK', 'CONNMARK', 'CHECKSUM', 'TRACE', 'CT', 'TCPMSS', 'CLASSIFY',
                      'DSCP', 'TOS', 'TTL', 'HL', 'AUDIT', 'SECMARK', 'CONNSECMARK', 'TEE', 'NOTRACK', 'IDLETIMER',
                      'LED', 'SET', 'HMARK', 'RATEEST', 'TPROXY'))
STOPS = frozenset(('DROP', 'REJECT'))

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

    def target_option(self, name):
        args = self.target_args
        for i, word in enumerate(args[:-1]):
            if word == name:
                return args[i + 1]
        return None


@dataclass
class Outcome:
    """Where the walk ended: ``target`` (a terminal target, a built-in chain's policy, or None when
    it left a user chain it started in); ``rule``: (chain, index from 1, spec) of the rule that ended
    it, None for a policy; ``path``: the rules taken on the way, jumps included, as (chain, index,
    spec); ``uncertain``: the rules passed over because a test could not be evaluated; ``tested``:
    how many rules the packet was tested against."""
    target: str | None
    rule: tuple | None = None
    path: list = field(default_factory=list)
    uncertain: list = field(default_factory=list)
    tested: int = 0
    policy: bool = False

    @property
    def stopped(self):
        return self.target in STOPS


def _words(spec):
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


@functools.lru_cache(maxsize=4096)
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
    return Rule(tuple(tests), how, target, tuple(words[end + 2:]))


@functools.lru_cache(maxsize=4096)
def _network(text):
    return ipaddress.ip_network(text, strict=False)


def _address_test(value, text, outside=()):
    """Is the address ``value`` in the network ``text``? ``outside``: networks known not to hold it."""
    try:
        net = _network(text)
    except ValueError:
        return None
    if value is None:
        if net.prefixlen == 0:
            return True
        if any(net.version == o.version and net.subnet_of(o) for o in outside):
            return False
        return None
    ip = ipaddress.ip_address(value)
    return ip.version == net.version and ip in net


def _port_test(text, port):
    """``text``: ``80``, ``80:90`` or a multiport list ``80,443,1000:2000``."""
    if port is None:
        return None
    for item in text.split(','):
        first, _sep, last = item.partition(':')
        try:
            if int(first or 0) <= port <= int(last or first or 65535):
                return True
        except ValueError:
            return None
    return False


def _iface_test(name, value):
    if name is None:
        return None
    return name.startswith(value[:-1]) if value.endswith('+') else name == value


def _proto_test(proto, value):
    if value == 'all' or value == '0':
        return True
    if proto is None:
        return None
    return proto == _PROTOCOL_NUMBERS.get(value, value)


def _tcp_flags(packet, masks):
    if len(masks) != 2 or 'states' not in packet:
        return None
    flags = {'SYN'} if 'NEW' in packet['states'] else {'ACK'}
    mask = set(masks[0].split(',')) if masks[0] != 'ALL' else {'SYN', 'ACK', 'FIN', 'RST', 'URG', 'PSH'}
    compare = set(masks[1].split(',')) - {'NONE'}
    return (flags & mask) == compare


def _types_test(local, value):
    if local is None:
        return None
    types = {'LOCAL', 'UNICAST'} if local else {'UNICAST'}
    return bool(types & set(value.split(',')))


_ADDRESS_KEYS = {'-s': 'src', '--source': 'src', '-d': 'dst', '--destination': 'dst',
                 '--ctorigsrc': 'src', '--ctorigdst': 'origdst', '--ctreplsrc': 'replsrc', '--ctrepldst': 'src'}
_PORT_KEYS = {'--dport': 'dport', '--destination-port': 'dport', '--sport': 'sport', '--source-port': 'sport',
              '--dports': 'dport', '--destination-ports': 'dport', '--sports': 'sport', '--source-ports': 'sport',
              '--ctorigdstport': 'origdstport', '--ctorigsrcport': 'sport', '--ctrepldstport': 'sport'}


def test(option, value, packet):
    """One test of a rule against the packet: True, False or None (cannot tell)."""
    if option in _ADDRESS_KEYS:
        key = _ADDRESS_KEYS[option]
        outside = packet.get('src_outside', ()) if key == 'src' else ()
        return _address_test(packet.get(key), value, outside)
    if option in _PORT_KEYS:
        return _port_test(value, packet.get(_PORT_KEYS[option]))
    if option in ('-i', '--in-interface'):
        return _iface_test(packet.get('iface'), value)
    if option in ('-o', '--out-interface'):
        return _iface_test(packet.get('oface'), value)
    if option in ('-p', '--protocol', '--ctproto'):
        return _proto_test(packet.get('proto'), value)
    if option in ('--ctstate', '--state'):
        return bool(set(value.split(',')) & set(packet.get('states', ('NEW',))))
    if option == '--ctstatus':
        return bool(set(value.split(',')) & set(packet.get('ctstatus', ('NONE',))))
    if option == '--dst-type':
        return _types_test(packet.get('local'), value)
    if option == '--src-type':
        return _types_test(packet.get('src_local'), value)
    if option in ('--comment', '--limit-iface-in', '--limit-iface-out'):
        return True
    if option == '--syn':
        return 'NEW' in packet['states'] if 'states' in packet else None
    if option == '--tcp-flags':
        return _tcp_flags(packet, value)
    return None


def evaluate(rule, packet):
    """(True, False or None, the first option that could not be evaluated)."""
    unknown = None
    for option, value, negated in rule.tests:
        result = test(option, value, packet)
        if result is None:
            unknown = unknown or option
            continue
        if result == negated:
            return False, None
    return (True, None) if unknown is None else (None, unknown)


def walk(chains, start, packet, policies=None, limit=10000):
    """Follow ``packet`` from chain ``start`` through ``chains`` ({name: [spec]}); an Outcome.

    ``policies``: {built-in chain: policy}; the walk of a built-in chain that no rule ends ends in
    its policy (``policy=True``). A walk that starts in a user chain and returns from it ends with
    target None. ``-j`` into a chain returns after it, ``-g`` does not; RETURN leaves the chain.
    """
    policies = policies or {}
    out = Outcome(None)
    stack = []                      # (chain, next index) to return to after a -j
    chain, index = start, 0
    while True:
        rules = chains.get(chain, [])
        if index >= len(rules):
            if not stack:
                if start in policies:
                    out.target, out.policy = policies[start], True
                return out
            chain, index = stack.pop()
            continue
        out.tested += 1
        if out.tested >= limit:
            raise ValueError('the walk through %s passed %d rules: a loop in the rules' % (start, limit))
        spec = rules[index]
        rule = parse(spec)
        matched, unknown = evaluate(rule, packet)
        here = (chain, index + 1, spec)
        if matched is None and rule.target not in CONTINUE and rule.target is not None:
            out.uncertain.append(here + (unknown,))
        if not matched or rule.target is None or rule.target in CONTINUE:
            index += 1
            continue
        if rule.target in TERMINAL:
            out.target, out.rule = rule.target, here
            out.path.append(here)
            return out
        if rule.target == 'RETURN':
            out.path.append(here)
            if not stack:
                if start in policies:
                    out.target, out.policy = policies[start], True
                return out
            chain, index = stack.pop()
            continue
        out.path.append(here)
        if rule.how == '-j':
            stack.append((chain, index + 1))
        chain, index = rule.target, 0
