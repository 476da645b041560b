# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The nftables backend as the doctor sees it: PRIVATE to this collection, no stable API.

The same interface as iptables/diagnose.py's Diagnosis (the doctor's checks ask it for everything
firewall-specific), over ``nft -j list ruleset``, read once per run (again for the probe's counters).
A family's ``live`` value is a Live: the ruleset of that family's tables (walk.Ruleset: ours, libvirt's,
an admin's) and what ruleset.parse reads of ours and libvirt's. The doctor walks the iptables tables and
chains it knows; here each is the base chains of every table on the same hook (walk.STAGES), run as the
kernel runs them: an accept in one base chain does not stop another table's drop.

What is ours: ``table inet <name>`` (its dispatch maps, chains and postrouting masquerade) and the accept
rule at the top of libvirt's ``forward`` chains (``table ip/ip6 libvirt_network``); the hooks the jumps
check reads are our three base chains and that accept rule. The saved file is ``<persist_path>.nft``.
A drop in another table cannot be overridden from ours: the fix the doctor names is the accept for our
mark at the top of that table's chain (rules.ACCEPT_MARK).
"""

from __future__ import annotations

import re

from ansible_collections.kvmnet.nat.plugins.module_utils import _command
from ansible_collections.kvmnet.nat.plugins.module_utils._backend import RulesetError
from ansible_collections.kvmnet.nat.plugins.module_utils.nftables import persisted as _persisted
from ansible_collections.kvmnet.nat.plugins.module_utils.nftables import rules as _rules
from ansible_collections.kvmnet.nat.plugins.module_utils.nftables import ruleset as _ruleset
from ansible_collections.kvmnet.nat.plugins.module_utils.nftables import walk as _walk
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables.walk import Outcome

TERMINAL = frozenset(('ACCEPT', 'DROP', 'REJECT', 'DNAT', 'SNAT', 'MASQUERADE', 'REDIRECT', 'NFQUEUE', 'TPROXY'))
FAMILY_WORD = {4: 'ip', 6: 'ip6'}
# iptables-nft's tables (nft calls them managed by iptables-nft): a fix there is an iptables command
_IPTABLES_TABLES = ('filter', 'nat', 'mangle', 'raw', 'security')
MARK_ACCEPT = 'ct mark and 0x%08x == 0x%08x accept' % (_rules.ACCEPT_MARK, _rules.ACCEPT_MARK)     # 'and', not '&': safe to paste into a shell
_DEST_RE = re.compile(r'\[-> (\[[0-9a-fA-F:.]+\]|[0-9.]+|[0-9a-fA-F:]+|this host)(?::(\d+))?\]$')
_DNAT_RE = re.compile(r'dnat (?:ip6? )?to (\[[0-9a-fA-F:.]+\]|[0-9.]+|[0-9a-fA-F:]+)(?::(\d+))?(?: |$)')
_OUR_MARKS = tuple('ct mark set ct mark | 0x%08x' % bits for bits in
                   (_rules.ACCEPT_MARK, _rules.ACCEPT_MARK | _rules.MASQ_MARK))
# the doctor's hooks: (table, chain) -> our base chain and its rule (FORWARD: the accept rule in libvirt's chain)
HOOKS = (('nat', 'PREROUTING', 'prerouting', 'jump dispatch'),
         ('nat', 'OUTPUT', 'output', 'fib daddr type local jump dispatch'),
         ('nat', 'POSTROUTING', 'postrouting', None),
         ('filter', 'FORWARD', None, None))


class Live(dict):
    """One family's tables: {the doctor's table name: this}, so that every table it walks is found; ``rs``
    (walk.Ruleset of the family), ``ours`` (ruleset.Live: our table, libvirt's forward chains)."""

    def __init__(self, family, rs, ours):
        super().__init__((name, self) for name in ('raw', 'mangle', 'nat', 'filter'))
        self.family, self.rs, self.ours = family, rs, ours

    def __hash__(self):
        return id(self)

    def __eq__(self, other):
        return self is other


def _split(dest_text):
    host, port = dest_text
    return host.strip('[]'), (int(port) if port else None)


def destination(spec):
    """(address text, first port or None) of a NAT rule's text: the target the walk found (``[-> a:p]``),
    else the rule's own ``dnat to``."""
    found = _DEST_RE.search(spec) or _DNAT_RE.search(spec)
    return _split(found.groups()) if found else (None, None)


def is_ours(spec):
    """A rule of our table that DNATs (it sets our mark), or our accept rule."""
    return any(mark in spec for mark in _OUR_MARKS) or spec.endswith('comment "%s"' % _rules.ACCEPT_COMMENT)


def _chain_words(chain_id):
    """'chain inet filter forward' -> ('inet', 'filter', 'forward'); None for a hook without chains."""
    words = chain_id.split()
    return tuple(words[1:4]) if len(words) == 4 and words[0] == 'chain' else None


class Diagnosis:
    """What the doctor asks of the nftables backend, for one run (``engine``: backend.Engine; ``choice``:
    _backends.Choice, which backend the host got and why)."""

    name = 'nftables'
    walks_nftables = True       # the walk covers every nftables table: no separate list of other tables' drops

    def __init__(self, engine, choice=None):
        self.engine, self.module, self.prefix, self.choice = engine, engine.module, engine.prefix, choice
        self._items, self._error, self._desired = None, '', {}

    def problems(self):
        return self.engine.problems()

    def table_name(self):
        return _rules.table_name(self.prefix)

    def tool(self, family):     # pylint: disable=unused-argument
        return 'nft'

    # ------------------------------------------------------------ reading
    def _read_items(self):
        nft = self.module.get_bin_path('nft')
        if not nft:
            return None
        out = _command.run(self.module, [nft, '-j', 'list', 'ruleset'], context='reading the nftables ruleset')[1]
        return _ruleset.objects(out)

    def _live(self, items, family):
        ours = _ruleset.parse({'nftables': [{k: v} for k, v in items]}, self.table_name())
        return Live(family, _walk.Ruleset(items, family), ours)

    def read(self, family):
        """The fields of the doctor's Family: the whole ruleset read once (``nft -j list ruleset``), this family's part."""
        if self._items is None:
            self._items = self._read_items()
        if self._items is None:
            return {'flavour': None, 'tables': {}, 'mixed': '', 'save_cmd': []}
        return {'flavour': 'nftables', 'tables': self._live(self._items, family), 'mixed': '',
                'save_cmd': ['nft', '-j', 'list', 'ruleset']}

    def reread(self, fam, table):   # pylint: disable=unused-argument
        """The family's tables again, with their counters (the probe's second read)."""
        items = self._read_items()
        return {} if items is None else self._live(items, fam.family)

    def desired(self, forwards, family):    # pylint: disable=unused-argument
        """Our table for every forward: one table holds both families."""
        key = tuple(id(f) for f in forwards)
        if key not in self._desired:
            self._desired = {key: _rules.desired_state(forwards, self.prefix)}
        return self._desired[key]

    def dnat_destinations(self, live):
        """{forward label: guest address} of our chains' rules (their comment is the label; a plain forward
        is an element of a map without one, its guest is found in libvirt)."""
        found = {}
        table = getattr(live, 'ours', None) and live.ours.table
        for chain in (table.chains.values() if table else ()):
            for rule in chain.rules:
                label = re.search(r' comment "([^"]*)"$', rule)
                address = destination(rule)[0]
                if label and address and not label.group(1).endswith(' hairpin'):
                    found.setdefault(label.group(1), address)
        return found

    # ------------------------------------------------------------ the walk
    @staticmethod
    def ruleset(live, table):
        """The family's tables for the doctor's ``table`` (every stage walks the same Ruleset), or None."""
        return (live, table) if isinstance(live, Live) else None

    @staticmethod
    def has_chain(rules, chain):
        return (rules[1], chain) in _walk.STAGES

    @staticmethod
    def follow(rules, chain, packet, skip=()):
        live, table = rules
        return _walk.hook(live.rs, table, chain, packet, skip=skip)

    @staticmethod
    def passes():
        return Outcome('ACCEPT', policy=True)

    def walk(self, live, table, chain, packet):
        if not isinstance(live, Live) or (table, chain) not in _walk.STAGES:
            return self.passes()
        return _walk.hook(live.rs, table, chain, packet)

    @staticmethod
    def ends(outcome):
        return outcome.target in TERMINAL

    # ------------------------------------------------------------ one rule (a text from a walk)
    @staticmethod
    def diverts(spec):
        words = spec.split()
        if 'tproxy' in words:
            return 'proxy'
        if 'queue' in words and 'bypass' not in spec:
            return 'queue'
        return None

    @staticmethod
    def target(spec):
        words = spec.split()
        for word, target in (('dnat', 'DNAT'), ('snat', 'SNAT'), ('masquerade', 'MASQUERADE'), ('redirect', 'REDIRECT'),
                             ('drop', 'DROP'), ('reject', 'REJECT'), ('accept', 'ACCEPT')):
            if word in words:
                return target
        return None

    @staticmethod
    def names_destination(spec):
        return ' daddr' in ' ' + spec

    is_ours = staticmethod(is_ours)
    destination = staticmethod(destination)

    # ------------------------------------------------------------ the live tables
    @staticmethod
    def counter(live, table, rule):     # pylint: disable=unused-argument
        """The packet count of ``rule`` (a rule with a ``counter`` statement), or None."""
        if not isinstance(live, Live) or rule is None or rule[1] < 1:
            return None
        chain = live.rs.by_id(rule[0])
        if chain is None or rule[1] > len(chain.rules):
            return None
        return chain.rules[rule[1] - 1][2]

    def _libvirt_rules(self, live):
        return live.ours.libvirt.get(FAMILY_WORD[live.family], None) if isinstance(live, Live) else None

    def policy(self, live, table, chain):
        """(the chain's table is there, 'accept' when the chain holding our hook is there, else None)."""
        if not isinstance(live, Live):
            return False, None
        if (table, chain) == ('filter', 'FORWARD'):
            present = FAMILY_WORD[live.family] in live.ours.libvirt
            return present, ('accept' if self._libvirt_rules(live) is not None else None)
        ours = live.ours.table
        name = next((h[2] for h in HOOKS if h[:2] == (table, chain)), None)
        return ours is not None, ('accept' if ours is not None and name in ours.chains else None)

    @staticmethod
    def owned(live):
        return isinstance(live, Live) and live.ours.table is not None

    def hooks(self, live):
        """{(table, chain): [positions of our hook]}: our base chains' rule, and our accept rule in libvirt's
        ``forward`` chain of the family (present, once and first)."""
        found = {}
        table = live.ours.table if isinstance(live, Live) else None
        for doctor_table, doctor_chain, ours, rule in HOOKS:
            if ours is None:
                rules = self._libvirt_rules(live) or []
                found[(doctor_table, doctor_chain)] = [i for i, r in enumerate(rules, 1) if r.ours]
                continue
            chain = table.chains.get(ours) if table is not None else None
            if chain is None:
                found[(doctor_table, doctor_chain)] = []
            elif rule is None:
                found[(doctor_table, doctor_chain)] = [1]
            else:
                found[(doctor_table, doctor_chain)] = [i for i, r in enumerate(chain.rules, 1) if r == rule]
        return found

    def hook_label(self, live, table, chain):
        """How the texts name a hook: our base chain, or libvirt's forward chain of the family."""
        if (table, chain) == ('filter', 'FORWARD'):
            return '%s %s %s' % (FAMILY_WORD[getattr(live, 'family', 4)], _rules.LIBVIRT_TABLE, _rules.LIBVIRT_CHAIN)
        return 'inet %s %s' % (self.table_name(), next(h[2] for h in HOOKS if h[:2] == (table, chain)))

    def hook_chain(self, live, table, chain):
        """The chain a walk's path names for the hook (to tell the rules above our hook)."""
        return 'chain ' + self.hook_label(live, table, chain)

    # ------------------------------------------------------------ our table against the declaration
    @staticmethod
    def _comparable(lines):
        """Comparable items of a table's lines: set and map elements, and the rules of the chains of single
        forwards, without the names that depend on the other forwards (a chain's hash)."""
        found = set()
        for line in lines:
            words = line.split(' ', 3)
            if len(words) == 4 and words[0] in ('set', 'map') and words[2] == 'element':
                found.add('%s %s' % (words[1], re.sub(r' : jump f_[0-9a-f]{16}$', ' : jump', words[3])))
            elif len(words) == 4 and words[0] == 'chain' and words[1].startswith('f_') and words[2] == 'rule':
                found.add('rule %s' % words[3])
        return found

    def ours(self, live):
        """{'table': the items of our live table}."""
        table = live.ours.table if isinstance(live, Live) else None
        return {'table': self._comparable(table.lines()) if table is not None else set()}

    def forward_rules(self, fwd):
        """The forward's own items (elements, rules) as our table holds and the saved file keeps them."""
        desired = _rules.desired_state([fwd], self.prefix)
        return sorted(self._comparable(desired.table.lines()))

    def missing(self, ours, live, fwd):
        """What of the forward's own items is not in ``ours``: 'DNAT' (its map element or rule), 'MASQUERADE'
        (its masquerade or hairpin element), 'accept' (the accept rule, where libvirt's forward chain is)."""
        have = ours.get('table', set())
        found = []
        for item in self.forward_rules(fwd):
            if item not in have:
                found.append('MASQUERADE' if item.split(' ', 1)[0][:4] in ('masq', 'hair') else 'DNAT')
        rules = self._libvirt_rules(live)
        if rules is not None and not any(r.ours for r in rules):
            found.append('accept')
        return found

    # ------------------------------------------------------------ the saved file
    @staticmethod
    def saved_path(path, family):   # pylint: disable=unused-argument
        """One file for both families: <persist_path>.nft."""
        return '%s.nft' % path

    @staticmethod
    def read_persisted(text):
        return _persisted.read_persisted(text or '')

    @staticmethod
    def persisted_text(desired, flavour):    # pylint: disable=unused-argument
        if desired is None or desired.empty:
            return None
        return _persisted.persist_text(desired)

    @staticmethod
    def saved_lines(text):
        """The items of a saved script, one line each (the table it builds), or its lines when it is not one."""
        first = text.split('\n', 1)[0].split()
        name = first[2] if len(first) == 3 and first[:2] == ['table', 'inet'] else None
        try:
            return _persisted._parse_body(text, name).lines()[1:]
        except (RulesetError, IndexError, ValueError):
            return [line for line in text.splitlines() if line and not line.startswith('#')]

    def saved_rules(self, lines):
        return self._comparable(lines)

    # ------------------------------------------------------------ the texts of the fixes
    def layout_problems(self):
        """Why this backend cannot work on this host (libvirt's iptables rules beside it), from the choice."""
        from ansible_collections.kvmnet.nat.plugins.module_utils._backends import mismatch
        problem = mismatch(self.choice) if self.choice is not None else None
        return [problem] if problem else []

    def accept_fix(self, rule, what='', before_dnat=False):
        """What lets this forward's connections through the rule that stops them (``rule``: a walk's), or None
        for a rule this backend did not walk."""
        words = _chain_words(rule[0]) if rule else None
        if words is None:
            return None
        family, table, chain = words
        if table == _rules.LIBVIRT_TABLE:
            return ("kvmnet.nat's accept rule must be first in %s %s %s (libvirt's reject comes after it): run the "
                    'kvmnet.nat.expose playbook (the libvirt network hook puts it back when libvirt rebuilds its table).'
                    % (family, table, _rules.LIBVIRT_CHAIN))
        if before_dnat:
            return ('Remove or narrow that rule (it is not kvmnet.nat\'s): it runs before kvmnet.nat\'s DNAT marks the '
                    'connection, so no accept for the mark can let it through.')
        base = self._base_of(family, table, chain)
        if family in ('ip', 'ip6') and table in _IPTABLES_TABLES:      # iptables-nft's: written with iptables
            rule_text = '%s -I %s 1 -m connmark --mark 0x%x/0x%x -j ACCEPT' % (
                'iptables' if family == 'ip' else 'ip6tables', base, _rules.ACCEPT_MARK, _rules.ACCEPT_MARK)
        else:
            rule_text = 'nft insert rule %s %s %s %s' % (family, table, base, MARK_ACCEPT)
        return ("An accept in kvmnet.nat's table cannot override a drop in another table: add the accept for "
                "kvmnet.nat's connection mark at the top of that table's base chain, %s "
                '(it lets exactly the connections kvmnet.nat forwards%s through), or remove or narrow the rule.'
                % (rule_text, what))

    def _base_of(self, family, table, chain):
        """The base chain to put the accept into: ``chain`` when it is one, else the table's forward chain."""
        chains = [obj for kind, obj in self._items or [] if kind == 'chain' and
                  (obj.get('family'), obj.get('table')) == (family, table)]
        if any(c.get('name') == chain and 'hook' in c for c in chains):
            return chain
        hooked = [c.get('name') for c in chains if c.get('hook') == 'forward'] or \
            [c.get('name') for c in chains if 'hook' in c]
        return hooked[0] if hooked else chain

    def inspect(self, table, rule):  # pylint: disable=unused-argument
        """How to look at a rule by hand."""
        words = _chain_words(rule[0]) if rule else None
        where = '%s %s %s' % words if words else 'ruleset'
        return 'nft -a list %s %s shows it with its handle and counter' % ('chain' if words else '', where)

    @staticmethod
    def masquerade_fix(net, guest):     # pylint: disable=unused-argument
        return 'masquerade: auto on the forward (run the kvmnet.nat.expose playbook).'

    @staticmethod
    def hook_noun():
        return 'hook rule'

    @staticmethod
    def listing(table):     # pylint: disable=unused-argument
        return 'nft -a list ruleset'
