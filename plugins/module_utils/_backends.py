# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Which firewall backend a host gets (``backend: auto``), and moving a host from one to the other:
PRIVATE to this collection, no stable API.

``auto`` follows libvirt's network driver, because our rules must pass libvirt's own reject rules, and
they can only do that in the same firewall (an accept in one nftables table does not override a reject
in another). In this order, the first that applies decides:

1. libvirt's nftables table (``table ip libvirt_network`` or ``ip6``) is loaded: **nftables**;
2. libvirt's iptables chains (``LIBVIRT_FWI``, ``LIBVIRT_FWO``, ``LIBVIRT_FWX``, ``LIBVIRT_PRT``, ...)
   are loaded (iptables-nft: seen in nft's list of chains): **iptables**;
3. no libvirt network is active: ``firewall_backend`` in /etc/libvirt/network.conf, the backend libvirt
   will use when it starts one;
4. our own nftables table exists (an earlier run chose nftables): **nftables**, so that a host whose
   networks are all stopped does not move back and forth;
5. otherwise **iptables** (what Debian's and Ubuntu's libvirt packages use, and what kvmnet.nat 1.0 did).

``Switch`` is the Engine the driver gets: the chosen engine's scopes with the forwards, then the other
engine's scopes with nothing desired, so that changing the backend moves every forward and leaves
nothing of the old one (its rules, its accept rule, its saved files); a host without the other's tool
has nothing of it to remove.
"""

from __future__ import annotations

import json
import re

from ansible_collections.kvmnet.nat.plugins.module_utils import _command
from ansible_collections.kvmnet.nat.plugins.module_utils._backend import BackendUnavailable, RulesetError
from ansible_collections.kvmnet.nat.plugins.module_utils.nftables.rules import ACCEPT_MARK

BACKENDS = ('auto', 'iptables', 'nftables')
NETWORK_CONF = '/etc/libvirt/network.conf'
LIBVIRT_TABLE = 'libvirt_network'
LIBVIRT_CHAINS = ('LIBVIRT_FWI', 'LIBVIRT_FWO', 'LIBVIRT_FWX', 'LIBVIRT_INP', 'LIBVIRT_OUT', 'LIBVIRT_PRT')
_CONF_RE = re.compile(r'^\s*firewall_backend\s*=\s*"([^"]*)"\s*(?:#.*)?$')


class Choice:
    """``name`` (iptables or nftables), ``requested`` (auto, iptables, nftables), ``reason`` (one sentence),
    ``libvirt`` (the backend libvirt's loaded rules show: iptables, nftables or None)."""

    def __init__(self, name, requested, reason, libvirt=None):
        self.name, self.requested, self.reason, self.libvirt = name, requested, reason, libvirt

    def result(self):
        return dict(name=self.name, requested=self.requested, reason=self.reason, libvirt=self.libvirt)


def conf_backend(text):
    """The ``firewall_backend`` libvirt's network.conf sets (the last assignment), or None."""
    found = None
    for line in (text or '').splitlines():
        match = _CONF_RE.match(line)
        if match:
            found = match.group(1)
    return found if found in ('iptables', 'nftables') else None


def loaded(objects, own_table):
    """What ``nft -j list chains`` objects show: (libvirt's backend: 'nftables', 'iptables' or None, the
    table or chain that shows it, whether ``table inet <own_table>`` exists)."""
    libvirt, evidence, ours = None, None, False
    for obj in objects:
        chain = obj.get('chain') if isinstance(obj, dict) else None
        if not isinstance(chain, dict):
            continue
        family, table, name = chain.get('family'), chain.get('table'), chain.get('name')
        if table == LIBVIRT_TABLE and family in ('ip', 'ip6'):
            if libvirt != 'nftables':       # the first table named (ip before ip6), over any iptables chain
                libvirt, evidence = 'nftables', 'table %s %s' % (family, LIBVIRT_TABLE)
        elif name in LIBVIRT_CHAINS and family in ('ip', 'ip6') and libvirt is None:
            libvirt, evidence = 'iptables', 'chain %s of table %s %s' % (name, family, table)
        elif (family, table) == ('inet', own_table):
            ours = True
    return libvirt, evidence, ours


def choose(requested, objects, conf_text, own_table):
    """The Choice for ``requested`` on a host whose ``nft -j list chains`` gave ``objects`` (None: no nft)
    and whose network.conf holds ``conf_text`` (None: none)."""
    libvirt, evidence, ours = loaded(objects or [], own_table)
    conf = conf_backend(conf_text)
    if requested != 'auto':
        return Choice(requested, requested, 'backend: %s was asked for' % requested, libvirt)
    if libvirt:
        return Choice(libvirt, requested, "libvirt's network driver uses its %s firewall backend here (%s is "
                      "loaded)" % (libvirt, evidence), libvirt)
    if conf:
        return Choice(conf, requested, 'no libvirt network is active and %s sets firewall_backend = "%s"'
                      % (NETWORK_CONF, conf), libvirt)
    if ours:
        return Choice('nftables', requested, 'no libvirt network is active, %s sets no firewall_backend, and '
                      "kvmnet.nat's table inet %s is loaded (an earlier run chose nftables)"
                      % (NETWORK_CONF, own_table), libvirt)
    return Choice('iptables', requested, 'no libvirt network is active and neither %s nor a loaded table says '
                  'otherwise: iptables, the backend of Debian\'s libvirt packages' % NETWORK_CONF, libvirt)


def mismatch(choice):
    """Why ``choice`` cannot work on this host, or None: the nftables backend beside libvirt's iptables
    rules (libvirt's REJECT in FORWARD would refuse every forwarded connection, and this backend adds no
    accept there)."""
    if choice.name == 'nftables' and choice.libvirt == 'iptables':
        return ("libvirt's network driver uses its iptables firewall backend here (its LIBVIRT_* chains are "
                "loaded): its REJECT rules in FORWARD would refuse every forwarded connection, and the nftables "
                'backend adds no accept there. Use backend: iptables (or auto), or set firewall_backend = '
                '"nftables" in %s and restart libvirt\'s networks' % NETWORK_CONF)
    return None


_OUR_MARK_MATCH = {'match': {'op': '==', 'left': {'&': [{'ct': {'key': 'mark'}}, ACCEPT_MARK]}, 'right': ACCEPT_MARK}}


def _accepts_our_mark(rule):
    """A rule that accepts every connection carrying our mark and nothing but that: nft's ``ct mark & <bit> ==
    <bit> accept`` exactly, or iptables' connmark match (whose mark nft's JSON does not show)."""
    exprs = [expr for expr in rule.get('expr', []) if isinstance(expr, dict) and 'counter' not in expr]
    if not exprs or 'accept' not in exprs[-1]:
        return False
    matches = exprs[:-1]
    if len(matches) == 1 and matches[0] == _OUR_MARK_MATCH:
        return True
    return len(matches) == 1 and matches[0].get('xt', {}).get('name') == 'connmark'


def _stops(rule):
    """A rule that drops or rejects (what comes after it may never be reached)."""
    return any(isinstance(expr, dict) and ('drop' in expr or 'reject' in expr or
                                           expr.get('xt', {}).get('name') == 'REJECT')
               for expr in rule.get('expr', []))


def forward_drops(ruleset, own_table):
    """The base chains on the forward hook of tables not ours and not libvirt's whose policy is drop and which
    hold no accept by conntrack mark: [{table, chain, iptables, fix}]. An nftables drop in another table cannot
    be overridden by an accept in ours or libvirt's: each needs the accept for our mark (``fix``)."""
    items = ruleset.get('nftables', []) if isinstance(ruleset, dict) else []
    chains, accepted, stopped = [], set(), set()
    for item in items if isinstance(items, list) else []:
        obj = item.get('chain') if isinstance(item, dict) else None
        if isinstance(obj, dict) and obj.get('hook') == 'forward' and obj.get('policy') == 'drop':
            chains.append(obj)
        rule = item.get('rule') if isinstance(item, dict) else None
        where = (rule.get('family'), rule.get('table'), rule.get('chain')) if isinstance(rule, dict) else None
        if where is None or where in stopped:
            continue                    # only an accept above every drop of its chain lets our connections through
        if _accepts_our_mark(rule):
            accepted.add(where)
        elif _stops(rule):
            stopped.add(where)
    found = []
    for chain in chains:
        family, table, name = chain.get('family'), chain.get('table'), chain.get('name')
        if table in (own_table, LIBVIRT_TABLE) or (family, table, name) in accepted:
            continue
        iptables = family in ('ip', 'ip6') and table == 'filter' and name == 'FORWARD'
        fix = ('%s -I FORWARD 1 -m connmark --mark 0x%x/0x%x -j ACCEPT'
               % ('iptables' if family == 'ip' else 'ip6tables', ACCEPT_MARK, ACCEPT_MARK) if iptables else
               'nft insert rule %s %s %s ct mark and 0x%08x == 0x%08x accept'
               % (family, table, name, ACCEPT_MARK, ACCEPT_MARK))
        found.append({'table': '%s %s' % (family, table), 'chain': name, 'iptables': iptables, 'fix': fix})
    return found


def read_choice(module, requested, own_table, conf_path=None):
    """The Choice for this host, read with ``nft -j list chains`` and ``conf_path`` (read only)."""
    objects, failed = None, None
    nft = module.get_bin_path('nft')
    if nft:
        rc, out, err = _command.run(module, [nft, '-j', 'list', 'chains'], check=False)
        if rc == 0:
            try:
                objects = json.loads(out or '{}').get('nftables', [])
            except (ValueError, AttributeError):
                objects = None
        if not isinstance(objects, list):
            objects, failed = None, (err or out or 'no JSON').strip()[:200]
    if failed and requested == 'auto':
        # without the listing, auto would fall back to network.conf or iptables on a host whose libvirt uses
        # nftables, move every forward there and delete our table: refuse instead
        raise RulesetError('backend: auto cannot tell which firewall libvirt uses: nft -j list chains failed (%s)'
                           % failed)
    return choose(requested, objects, read_conf(conf_path), own_table)


def read_conf(path=None):
    """The text of libvirt's network.conf (its first 64 KiB), or None when it cannot be read."""
    try:
        with open(path or NETWORK_CONF, encoding='utf-8', errors='replace') as handle:
            return handle.read(65536)
    except OSError:
        return None


class _Retired:
    """A Backend of the engine not chosen: everything as the inner one, but nothing desired (and ``retired``:
    the result names its changes, not its flavour or rules)."""

    retired = True

    def __init__(self, inner):
        self._inner = inner

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def desired(self, forwards):        # pylint: disable=unused-argument
        return self._inner.desired([])


class Switch:
    """The driver's Engine for a run of ``engines`` ({name: Engine}): ``prepare`` (under the host lock,
    before anything is read) chooses one for ``requested``; then its scopes carry the forwards, and every
    other engine's scopes follow with nothing desired. ``saved_files`` and ``problems`` are known before
    the choice: both backends' files are written or removed."""

    def __init__(self, module, engines, requested, conf_path=None):
        self.module, self.engines, self.requested, self.conf_path = module, dict(engines), requested, conf_path
        self.saved_files = {}
        for engine in self.engines.values():
            self.saved_files.update(engine.saved_files)
        self.choice, self.chosen, self.retired = None, None, ()
        self.diff_header, self.forward_scopes, self.scopes = '', (), ()

    def problems(self):
        return list(next(iter(self.engines.values())).problems())

    def choose(self, choice):
        """Take ``choice`` (a Choice): its engine carries the forwards, the others are emptied."""
        self.choice = choice
        self.chosen = self.engines[choice.name]
        self.retired = tuple(engine for name, engine in self.engines.items() if name != choice.name)
        self.diff_header = self.chosen.diff_header
        self.forward_scopes = tuple(self.chosen.scopes)
        self.scopes = self.forward_scopes + tuple(scope for engine in self.retired for scope in engine.scopes)

    def prepare(self, removing=False):
        """Read which backend this host gets (RulesetError when it cannot work here, unless ``removing``);
        the result fields that say so."""
        own = self.engines['nftables'].table() if 'nftables' in self.engines else None
        choice = read_choice(self.module, self.requested, own, self.conf_path)
        problem = mismatch(choice)
        if problem and not removing:
            raise RulesetError('backend nftables cannot work here: %s' % problem)
        if choice.name == 'iptables' and choice.libvirt == 'nftables' and not removing:
            self.module.warn("libvirt's network driver uses its nftables firewall backend here (table ip "
                             'libvirt_network is loaded): its reject cannot be overridden from iptables, so the '
                             'forwards stay refused until libvirt uses iptables (firewall_backend = "iptables" in '
                             '%s; the role does that with expose_libvirt_firewall_backend: iptables). backend: '
                             'auto would use nftables' % NETWORK_CONF)
        self.choose(choice)
        return {'backend': choice.result()}

    def open(self, scope):
        if scope in self.forward_scopes:
            return self.chosen.open(scope)
        for engine in self.retired:
            if scope in engine.scopes:
                return _Retired(engine.open(scope))
        raise BackendUnavailable('no backend has the scope %r' % (scope,))
