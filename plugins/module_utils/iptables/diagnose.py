# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The iptables backend as the doctor sees it: PRIVATE to this collection, no stable API.

The doctor (_doctor.py, _doctor_run.py) reads no iptables text itself: everything it learns about
the live rules, our chains and jumps, the saved file and the rules a forward should have comes through
a Diagnosis, made from the run's Engine (backend.py). ``live`` values are {table: save.Table} read with
packet counts; a walkable table is a walk.Ruleset; a walk's result is a walk.Outcome, whose rules are
(chain, index from 1, spec) and whose fields (target, rule, path, uncertain, policy, unfinished,
untracked, stopped) are the doctor's vocabulary for any backend.

Reading: each family's saves come from the host reader (_host.iptables_saves, every flavour with
``-c``); the family walked is the flavour the engine keeps the rules in, or on a host with rules in both
(the engine refuses it, the layout check says so) the flavour holding kvmnet.nat's chains, else nft.
"""

from __future__ import annotations

from ansible_collections.kvmnet.nat.plugins.module_utils import _command
from ansible_collections.kvmnet.nat.plugins.module_utils import _host
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables import persisted as _persisted
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables import rules as _rules
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables import save as _save
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables import walk as _walk
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables.netfilter import TOOL

is_ours = _rules.is_ours                # the planner's and the doctor's "ours" are one function
destination = _save.destination         # (address text, first port or None) of a DNAT rule's --to-destination


def owned(tables, prefix):
    """Whether kvmnet.nat's chains are in ``tables`` ({name: save.Table})."""
    return any(_rules.owned(chain, prefix, name) for name, table in tables.items() for chain in table.chains)


def family_of(saves, prefix):
    """The fields of the doctor's Family (flavour, tables, mixed, save_cmd) from one family's saves (_host.Saves)."""
    fields = {'flavour': None, 'tables': {}, 'mixed': '', 'save_cmd': []}
    flavour = saves.flavour
    if saves.both:
        fields['mixed'] = ('This host has %s rules in both iptables-legacy and iptables-nft: the kernel runs both, and '
                           'rules in one are invisible to the other.' % TOOL[saves.family])
        tables = {name: _save.parse_save(saves.texts[name]) for name in ('legacy', 'nft')}
        ours = [name for name in tables if owned(tables[name], prefix)]
        flavour = ours[0] if ours else 'nft'
        fields['tables'] = tables[flavour]
    elif flavour is not None:
        fields['tables'] = _save.parse_save(saves.texts[flavour])
    else:
        return fields
    fields['flavour'], fields['save_cmd'] = flavour, saves.commands[flavour]
    return fields


def _policies(table):
    return {name: policy for name, policy in table.chains.items() if policy != '-'}


class Diagnosis:
    """What the doctor asks of the iptables backend, for one run (``engine``: backend.Engine)."""

    def __init__(self, engine):
        self.engine, self.module, self.prefix = engine, engine.module, engine.prefix

    def problems(self):
        """The backend's own parameters (chain_prefix), one text: the Engine's."""
        return self.engine.problems()

    def tool(self, family):
        """The name of the family's tool, for the texts ('iptables', 'ip6tables')."""
        return TOOL[family]

    # ------------------------------------------------------------ reading
    def read(self, family):
        """The fields of the doctor's Family of ``family``: every flavour's save read once, with counters."""
        return family_of(_host.iptables_saves(self.module, family), self.prefix)

    def reread(self, fam, table):
        """One table again, with packet counts, from the flavour the rules are in (the probe's second read): a
        live value holding that table alone."""
        out = _command.run(self.module, fam.save_cmd + ['-c', '-t', table],
                           context='reading the IPv%d %s table' % (fam.family, table))[1]
        found = _save.parse_save(out).get(table)
        return {} if found is None else {table: found}

    def desired(self, forwards, family):
        return _rules.desired_state(forwards, family, self.prefix)

    def dnat_destinations(self, live):
        """{forward label: guest address} of kvmnet.nat's DNAT rules."""
        return _save.dnat_destinations(live, self.prefix)

    # ------------------------------------------------------------ the walk
    def ruleset(self, live, table):
        """The table as a walkable ruleset (each rule parsed once, long chains indexed), or None without it."""
        found = live.get(table)
        return None if found is None else _walk.Ruleset(found.rules, _policies(found))

    @staticmethod
    def has_chain(rules, chain):
        return rules.chain(chain) is not None or chain in rules.policies

    @staticmethod
    def follow(rules, chain, packet, skip=()):
        """Follow ``packet`` from ``chain`` of a walkable ruleset; ``skip``: rules passed over as if absent."""
        if skip:
            return _walk.walk(rules, chain, packet, skip=skip)
        return _walk.walk(rules, chain, packet)

    @staticmethod
    def passes():
        """The walk through a table or built-in chain the host does not have: the packet passes, as through an
        empty chain whose policy is ACCEPT (no rule ended it: ``rule`` None)."""
        return _walk.Outcome('ACCEPT', policy=True)

    def walk(self, live, table, chain, packet):
        """One walk through a table of ``live`` (the probe's, not kept): through what is not there, the packet passes."""
        found = live.get(table)
        if found is None or (chain not in found.rules and chain not in _policies(found)):
            return self.passes()
        return _walk.walk(_walk.Ruleset(found.rules, _policies(found)), chain, packet)

    @staticmethod
    def ends(outcome):
        """The walk ended at a target that takes the packet out of the chain (ACCEPT, DROP, DNAT, ...)."""
        return outcome.target in _walk.TERMINAL

    # ------------------------------------------------------------ one rule (a spec from a walk)
    @staticmethod
    def diverts(spec):
        """'proxy' (TPROXY), 'queue' (QUEUE, NFQUEUE without --queue-bypass) or None."""
        return _walk.parsed(spec).diverts

    @staticmethod
    def target(spec):
        return _walk.parsed(spec).target

    @staticmethod
    def names_destination(spec):
        """The rule matches a destination address (-d)."""
        return any(t[0] in ('-d', '--destination') for t in _walk.parsed(spec).tests)

    is_ours = staticmethod(is_ours)
    destination = staticmethod(destination)

    # ------------------------------------------------------------ the live tables
    @staticmethod
    def counter(live, table, rule):
        """The packet count of ``rule`` ((chain, position)) in ``table`` of a read with counters, or None."""
        return _save.counter(live.get(table), rule)

    @staticmethod
    def policy(live, table, chain):
        """(the table is there, the chain's policy: '-' for a user chain, None when the chain is not there)."""
        found = live.get(table)
        return found is not None, (found.chains.get(chain) if found is not None else None)

    def owned(self, live):
        return owned(live, self.prefix)

    def hooks(self, live):
        """{(table, built-in chain): [positions of our jump]} for every hook we need, in the engine's order
        (backend.Backend.hooks, of a live value read apart from a Backend)."""
        found = {}
        for table, chain, _spec in _rules.render_jumps(self.prefix):
            rules = live[table].rules.get(chain, []) if table in live else []
            found[(table, chain)] = [i for i, spec in enumerate(rules, 1) if _save.jumps_into_ours(spec, self.prefix, table)]
        return found

    def ours(self, live):
        """{table: set of the rules in our chains}."""
        return {name: {spec for chain, rules in table.rules.items() if _rules.owned(chain, self.prefix, name)
                       for spec in rules}
                for name, table in live.items()}

    @staticmethod
    def missing(ours, live, fwd):
        """What of the forward's own rules (DNAT, accept, MASQUERADE) is not in ``ours`` (from ``ours()``); with
        no filter table, every forwarded packet passes, so a missing accept keeps nothing out."""
        wanted = [('nat', s, 'DNAT') for s in _rules.render_dnat(fwd)] + \
                 [('filter', _rules.render_accept(fwd), 'accept')] + \
                 [('nat', s, 'MASQUERADE') for s in _rules.render_masquerade(fwd)]
        return [what for table, spec, what in wanted
                if spec not in ours.get(table, set()) and (table != 'filter' or 'filter' in live)]

    # ------------------------------------------------------------ the saved file
    @staticmethod
    def read_persisted(text):
        return _persisted.read_persisted(text)

    @staticmethod
    def persisted_text(desired, flavour):
        """The file the declared forwards would be saved as (compared with the file on disk, never written or
        applied: the grammar check is the module's), or None when there is nothing to keep."""
        if desired is None or desired.empty:
            return None
        return _persisted.persist_text(desired, flavour, check=False)

    @staticmethod
    def saved_lines(text):
        """The rule lines of a saved body (no comment, no blank line)."""
        return [line for line in text.splitlines() if line and not line.startswith('#')]

    @staticmethod
    def saved_rules(lines):
        """The rules of saved lines, comparable with ``forward_rules``."""
        return _persisted.rule_specs(lines)

    @staticmethod
    def forward_rules(fwd):
        """The forward's own DNAT and accept, as they are saved."""
        return _rules.render_dnat(fwd) + [_rules.render_accept(fwd)]

    # ------------------------------------------------------------ the words of the texts (nftables/diagnose.py has its own)
    name = 'iptables'
    walks_nftables = False      # other nftables tables are listed by the layout check, not walked

    @staticmethod
    def saved_path(path, family):
        return '%s.v%d' % (path, family)

    @staticmethod
    def layout_problems():
        return []

    @staticmethod
    def accept_fix(rule, what='', before_dnat=False):   # pylint: disable=unused-argument
        """None: the doctor's own iptables texts apply."""
        return None

    @staticmethod
    def inspect(table, rule):
        return 'iptables -t %s -L %s -v shows its counter' % (table, rule[0] if rule else '')

    @staticmethod
    def masquerade_fix(net, guest):
        return 'masquerade: auto on the forward (run the kvmnet.nat.expose playbook), or add a MASQUERADE for -s %s -d %s.' \
            % (net, guest)

    @staticmethod
    def hook_label(live, table, chain):     # pylint: disable=unused-argument
        return '%s %s' % (table, chain)

    @staticmethod
    def hook_chain(live, table, chain):     # pylint: disable=unused-argument
        return chain

    @staticmethod
    def hook_noun():
        return 'jump'

    @staticmethod
    def listing(table):
        return 'iptables-save -t %s' % table
