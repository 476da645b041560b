# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Where a forward's packets stop, and why: the diagnosis of kvmnet.nat.doctor. PRIVATE, no stable API.

Pure Python, no I/O: the module reads the host once (a View) and each forward is diagnosed from
it. The packets of a forward (an outside client's first packet, the same packet after the DNAT,
the guest's reply to it, a hairpin packet from another guest) are walked through the live ruleset
by the backend's walker, so rules written by hand are diagnosed the same way as the collection's own. A
table or built-in chain the host does not have lets every packet pass (as its policy ACCEPT would).

Each check gives ok True (✔), False (✘) or None (– not applicable or not checked) with a detail;
a failing check gives its causes, each one sentence with its fix. The verdict of a forward is the
first failing check, in the order of CHECKS (the order in which a packet meets them); with none, but a
rule on the way the doctor could not evaluate (or a walk it could not finish), the verdict is
"unknown", never "ok".

The checks that do not depend on the backend (forwarding, listener, guest, route) are in
_diagnose_host; the ones here (layout, jumps, rules, saved, counters) ask the firewall backend the View
was handed (``View.backend``, e.g. iptables/diagnose.py's Diagnosis): its walk, counters, hooks, our
rules and the saved file. A family's ``tables`` (the backend's live value) is read here only as a
mapping of table names; a rule is (chain, index from 1, text) and a walk's result an Outcome of the
backend's walker. Nothing here parses or renders a rule.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from ansible_collections.kvmnet.nat.plugins.module_utils._diagnose_host import (
    RUN_EXPOSE, Check, check_forwarding, check_guest, check_listener, check_route, _fail, guest_iface, public_iface)
from ansible_collections.kvmnet.nat.plugins.module_utils._forward import address_text

CHECKS = ('forwarding', 'layout', 'jumps', 'rules', 'saved', 'counters', 'listener', 'guest', 'route')
MARKS = {True: '\u2714', False: '\u2718', None: '\u2013'}


@dataclass
class Family:
    """What the host's firewall holds for one IP family (read by the backend)."""
    family: int
    flavour: str | None = None                   # the backend's flavour ('nft', 'legacy'); None: no tool for it
    tables: dict = field(default_factory=dict)   # the backend's live value: {table name: table}, with packet counts
    mixed: str = ''                              # set when both flavours hold rules
    saved_path: str | None = None                # <persist_path>.v4/.v6; None: not checked
    saved_text: str | None = None                # its content; None: the file does not exist
    save_cmd: list = field(default_factory=list)  # the command the rules were read with


@dataclass
class View:
    """Everything the doctor read from the host, once, and the backend that reads its firewall."""
    backend: object = None                         # the backend's diagnosis (iptables/diagnose.py: Diagnosis)
    families: dict = field(default_factory=dict)   # {4: Family, 6: Family}
    sysctl: dict = field(default_factory=dict)     # ipv4_forward, ipv6_forward, rp_filter {iface: int}, bridge_nf
    interfaces: list = field(default_factory=list)  # [(ip_interface, device)]
    routes: dict = field(default_factory=dict)     # {address text: device the kernel routes it to}
    default_dev: dict = field(default_factory=dict)  # {4: device of the default route, 6: ...}
    firewalld: bool = False
    nft: list | None = None                        # nftables tables from nft -j, None: not read
    nft_error: str = ''
    listeners: list = field(default_factory=list)  # [_listeners.Listener] with process names
    libvirt: dict | None = None                    # domains, networks, leases; None: not read
    libvirt_error: str = ''
    answers: dict = field(default_factory=dict)    # {(ip, proto, port): (ok, text)} the guest connect checks
    probes: dict = field(default_factory=dict)     # {label: probe record} with probe=true
    desired: dict = field(default_factory=dict)    # {family: the backend's desired state} of the declared forwards
    memo: dict = field(default_factory=dict, repr=False, compare=False)  # what every forward shares, made once

# ---------------------------------------------------------------- the packets of a forward


def _host_networks(view, family):
    return tuple(iface.network for iface, _dev in view.interfaces if iface.version == family)


def _public_address(fwd, view):
    if fwd.public_ip is not None:
        return address_text(fwd.public_ip)
    dev = public_iface(fwd, view)
    for iface, name in view.interfaces:
        if name == dev and iface.version == fwd.family:
            return address_text(iface.ip)
    return None


def outside_packet(fwd, view):
    """The first packet of a client outside this host, as nat PREROUTING sees it."""
    src = None
    if fwd.sources:
        net = fwd.sources[0]
        src = address_text(net.network_address if net.prefixlen >= net.max_prefixlen - 1 else net.network_address + 1)
    return {'proto': fwd.proto, 'src': src, 'src_outside': _host_networks(view, fwd.family),
            'dst': _public_address(fwd, view), 'dport': fwd.host_ports.first, 'iface': public_iface(fwd, view),
            'oface': None, 'local': True, 'src_local': False, 'states': ('NEW',), 'varies': ('src', 'sport')}


def after_dnat(fwd, view, packet):
    """The same packet after this forward's DNAT, as filter FORWARD and nat POSTROUTING see it."""
    return dict(packet, dst=address_text(fwd.guest_ip), dport=fwd.guest_ports.first, oface=guest_iface(fwd, view),
                local=False, states=('NEW', 'DNAT'), origdst=packet['dst'], origdstport=fwd.host_ports.first,
                replsrc=address_text(fwd.guest_ip))


def hairpin_packet(fwd, view):
    """A first packet from another guest of the same network to the public address, or None."""
    net = fwd.guest_network
    if net is None or net.num_addresses < 4:
        return None
    own = _once(view, ('own addresses', id(view.interfaces)), lambda: {iface.ip for iface, _dev in view.interfaces})
    src = next((ip for ip in (net.network_address + n for n in range(2, 6))
                if ip != fwd.guest_ip and ip not in own and ip in net), None)
    if src is None:
        return None
    return {'proto': fwd.proto, 'src': address_text(src), 'dst': _public_address(fwd, view),
            'dport': fwd.host_ports.first, 'iface': guest_iface(fwd, view), 'oface': None, 'local': True,
            'src_local': False, 'states': ('NEW',), 'varies': ('src', 'sport')}


def local_packet(fwd, view):
    """A connection from this host itself to the public address (nat OUTPUT)."""
    dst = _public_address(fwd, view)
    return {'proto': fwd.proto, 'src': dst, 'dst': dst, 'dport': fwd.host_ports.first, 'iface': '',
            'oface': None, 'local': True, 'src_local': True, 'states': ('NEW',)}


def allowed_source(fwd, address):
    """Whether ``address`` (text) is in the forward's allow-list; True when it has none."""
    if not fwd.sources:
        return True
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(parsed.version == net.version and parsed in net for net in fwd.sources)


def ruleset(view, family, table_name):
    """The table as the backend's walkable ruleset, made once per run (each rule parsed once), or None."""
    fam = view.families.get(family)
    table = fam.tables.get(table_name) if fam is not None else None
    if table is None:
        return None
    key = ('ruleset', family, table_name, id(table))
    if key not in view.memo:
        view.memo[key] = view.backend.ruleset(fam.tables, table_name)
    return view.memo[key]


def walk_in(view, family, table_name, chain, packet):
    """A built-in chain's walk; through a table or chain the host does not have, the packet passes."""
    rules = ruleset(view, family, table_name)
    if rules is None or not view.backend.has_chain(rules, chain):
        return view.backend.passes()
    return view.backend.follow(rules, chain, packet)


def dnat_to(view, outcome):
    """(address text, first port or None) a walk's DNAT sends the packet to; (None, None) without one."""
    if outcome.target != 'DNAT' or outcome.rule is None:
        return None, None
    return view.backend.destination(outcome.rule[2])


# The tables a forwarded packet meets, in the kernel's order (hook priorities: raw -300, conntrack -200,
# mangle -150, nat -100 on PREROUTING; mangle, filter, security on FORWARD; mangle, nat on POSTROUTING).
ARRIVING = (('raw', 'PREROUTING'), ('mangle', 'PREROUTING'))
FORWARDED = (('mangle', 'FORWARD'), ('filter', 'FORWARD'), ('security', 'FORWARD'), ('mangle', 'POSTROUTING'))


_ENTRY = ('origdst', 'origdstport', 'replsrc', 'ctdir', 'ctstatus')


def untracked(packet):
    """The packet as the raw table sees it: before conntrack, so --ctstate reads INVALID and no entry exists."""
    return {k: v for k, v in dict(packet, states=('INVALID',)).items()
            if k not in _ENTRY and ('dst_outside' not in packet or k not in ('origsrc', 'repldst'))}


@dataclass
class Trip:
    """A packet's way through every table, from its arrival to nat POSTROUTING: ``arriving`` and
    ``forwarded`` [(table, chain, Outcome)], ``pre`` the nat PREROUTING walk, ``post`` nat POSTROUTING's
    (None when no DNAT took it), ``after``: the packet after the DNAT (None without)."""
    packet: dict
    arriving: list
    pre: object                         # the backend's walk Outcome
    after: dict | None = None
    forwarded: list = field(default_factory=list)
    post: object = None

    def stages(self):
        return self.arriving + [('nat', 'PREROUTING', self.pre)] + self.forwarded + \
            ([('nat', 'POSTROUTING', self.post)] if self.post is not None else [])


def trip(fwd, view, packet):
    """Walk ``packet`` (a first packet to the public address) through raw, mangle and nat PREROUTING and,
    when nat DNATs it to this forward's guest, through mangle, filter and security FORWARD, mangle and
    nat POSTROUTING. Every stage is walked, whether or not an earlier one stops the packet."""
    family = fwd.family
    arriving = [(t, c, walk_in(view, family, t, c, untracked(packet) if t == 'raw' else packet)) for t, c in ARRIVING]
    pre = walk_in(view, family, 'nat', 'PREROUTING', packet)
    result = Trip(packet, arriving, pre)
    if dnat_to(view, pre)[0] == address_text(fwd.guest_ip):
        result.after = after_dnat(fwd, view, packet)
        result.forwarded = [(t, c, walk_in(view, family, t, c, result.after)) for t, c in FORWARDED]
        result.post = walk_in(view, family, 'nat', 'POSTROUTING', result.after)
    return result


def trips(fwd, view):
    """(the outside client's Trip, the hairpin Trip or None), made once per forward and shared by the checks."""
    key = ('trips', fwd)
    if key not in view.memo:
        hairpin = hairpin_packet(fwd, view)
        view.memo[key] = (trip(fwd, view, outside_packet(fwd, view)),
                          trip(fwd, view, hairpin) if hairpin is not None else None)
    return view.memo[key]


# The tables the guest's reply meets. Not nat: it sees only a connection's first packet, conntrack un-NATs the
# rest (the reply's source is put back to the public address after mangle POSTROUTING).
REPLY_ARRIVING = ARRIVING
REPLY_FORWARDED = (('mangle', 'FORWARD'), ('filter', 'FORWARD'), ('security', 'FORWARD'), ('mangle', 'POSTROUTING'))


def reply_packet(fwd, view, packet):
    """The guest's answer to the client's first packet ``packet``, as raw and mangle PREROUTING see it: from the
    guest's port, in through its bridge, to the client (to this host's address on the bridge when masquerade:
    always hid the client: conntrack puts the client back at nat PREROUTING), ESTABLISHED, reply direction."""
    guest, dev = address_text(fwd.guest_ip), guest_iface(fwd, view)
    to = packet['src']
    if fwd.masquerade == 'always':
        to = next((address_text(iface.ip) for iface, name in view.interfaces
                   if name == dev and iface.version == fwd.family), None)
    return {'proto': fwd.proto, 'src': guest, 'sport': fwd.guest_ports.first, 'dst': to, 'dport': None,
            'iface': dev, 'oface': None, 'local': fwd.masquerade == 'always', 'src_local': False,
            'states': ('ESTABLISHED',), 'ctdir': ('REPLY',), 'ctstatus': ('SEEN_REPLY', 'CONFIRMED'),
            'origsrc': packet['src'], 'origsport': None, 'origdst': packet['dst'], 'origdstport': fwd.host_ports.first,
            'replsrc': guest, 'repldst': to, 'repldport': None, 'dst_outside': packet['src_outside'],
            'varies': ('dst', 'dport', 'origsrc', 'origsport', 'repldst', 'repldport')}


@dataclass
class Reply:
    """The guest's reply's way: ``packet``, and [(table, chain, Outcome)] from raw PREROUTING to mangle POSTROUTING."""
    packet: dict
    walked: list

    def stages(self):
        return self.walked


def _reply_walks(view, family, packet, oface):
    forwarded = dict(packet, dst=packet['origsrc'], local=False, oface=oface)
    return [(t, c, walk_in(view, family, t, c, untracked(packet) if t == 'raw' else packet)) for t, c in REPLY_ARRIVING] + \
        [(t, c, walk_in(view, family, t, c, forwarded)) for t, c in REPLY_FORWARDED]


_SHARED = ('proto', 'src', 'sport', 'dst', 'local', 'iface', 'origsrc', 'origdst', 'replsrc')


def reply_trip(fwd, view):
    """The Reply to the outside client's first packet, made once per forward. The walks are shared by the
    forwards whose replies differ only in the client's original port (the host port): walked without it, and
    again with it for a forward when a rule passed over could not be told without it."""
    key = ('reply', fwd)
    if key not in view.memo:
        packet = reply_packet(fwd, view, trips(fwd, view)[0].packet)
        oface = public_iface(fwd, view)
        shared = ('reply walks', fwd.family, oface) + tuple(packet[k] for k in _SHARED)
        if shared not in view.memo:
            view.memo[shared] = _reply_walks(view, fwd.family, dict(packet, origdstport=None), oface)
        walked = view.memo[shared]
        if any(item[3] == '--ctorigdstport' for _t, _c, outcome in walked for item in outcome.uncertain):
            walked = _reply_walks(view, fwd.family, packet, oface)
        view.memo[key] = Reply(packet, walked)
    return view.memo[key]


def _call_stack(steps):
    """The jumps still open at the last step: a step in a chain already on the stack means the jumps
    after that chain's entry returned (filter FORWARD rule 1 returned, rule 2 jumped on: only rule 2)."""
    stack = []
    for step in steps:
        for depth, open_step in enumerate(stack):
            if open_step[0] == step[0]:
                del stack[depth:]
                break
        stack.append(step)
    return stack


def _place(table_name, chain, index=None):
    """A rule's place: 'filter FORWARD rule 2' (iptables), 'chain inet filter forward rule 2' (nftables, whose
    walk names each chain whole; index 0 is the chain's policy, or a hook without chains)."""
    name = chain if ' ' in chain else '%s %s' % (table_name, chain)
    return name if index is None or index == 0 else '%s rule %d' % (name, index)


def where(table_name, outcome, rule=None):
    """'filter FORWARD rule 2 -> LIBVIRT_FWI rule 2: <spec>' for the rule that ended the walk."""
    rule = rule or outcome.rule
    if rule is None:
        return '%s policy' % table_name
    if ' ' in rule[0]:
        hops = _call_stack([step for step in outcome.path if step != rule] + [rule])[:-1]
        return '%s (%s)' % (' -> '.join([_place(table_name, c, i) for c, i, _s in hops] +
                                        [_place(table_name, rule[0], rule[1])]), rule[2])
    hops = _call_stack([step for step in outcome.path if step != rule] + [rule])[:-1]
    trail = ' -> '.join(['%s %s rule %d' % (table_name, hops[0][0], hops[0][1])] +
                        ['%s rule %d' % (c, i) for c, i, _s in hops[1:]] + ['%s rule %d' % (rule[0], rule[1])]) \
        if hops else '%s %s rule %d' % (table_name, rule[0], rule[1])
    return '%s (%s)' % (trail, rule[2])


# ---------------------------------------------------------------- checks, in the order of CHECKS


def _nft_problems(fwd, view):
    """Drops and rejects in nftables tables other than iptables-nft's own, on the forward hook (or prerouting)."""
    problems = []
    for table in view.nft or []:
        if table['iptables'] or table['family'] not in ('ip', 'inet', 'ip6') or \
                (table['family'] == 'ip' and fwd.family == 6) or (table['family'] == 'ip6' and fwd.family == 4):
            continue
        for chain in table['base']:
            if chain['hook'] not in ('forward', 'prerouting'):
                continue
            for verdict, rule in chain['stops']:
                if _nft_rule_spares(rule, fwd, view):
                    continue
                problems.append((table, chain, verdict, rule))
    return problems


def _nft_rule_spares(rule, fwd, view):
    """A drop or reject whose interface matches exclude this forward's packets."""
    wanted = {'iifname': public_iface(fwd, view), 'oifname': guest_iface(fwd, view)}
    for key, value, negated in rule.get('ifaces', ()):
        have = wanted.get(key)
        if have is None:
            continue
        same = have.startswith(value[:-1]) if value.endswith('*') else have == value
        if same == negated:
            return True
    return False


def check_layout(fwd, view):
    fam = view.families.get(fwd.family)
    details = []
    if fam is None or fam.flavour is None:
        tool = view.backend.tool(fwd.family)
        return _fail('no %s' % tool, 'This host has no %s: no forward of this family can exist.' % tool,
                     'apt install %s.' % view.backend.name)
    details.append('%s: %s' % (view.backend.name, fam.flavour))
    for problem in view.backend.layout_problems():
        return _fail('; '.join(details), 'The %s backend cannot work here: %s.' % (view.backend.name, problem),
                     'Run the doctor and kvmnet.nat.expose with backend: auto (or the backend libvirt uses).')
    if fam.mixed:
        return _fail('; '.join(details), fam.mixed, 'Move every rule to one flavour (iptables-legacy-save, '
                     'iptables-nft-save show each), then %s.' % RUN_EXPOSE)
    if view.firewalld:
        return _fail('firewalld is running', 'firewalld is running: libvirt puts its networks in firewalld\'s "libvirt" '
                     'zone, whose nftables reject no accept of kvmnet.nat can override.',
                     'systemctl disable --now firewalld, or forward the port with firewall-cmd instead.')
    for table, chain, verdict, rule in ([] if view.backend.walks_nftables else _nft_problems(fwd, view)):
        libvirt = table['name'] == 'libvirt_network'
        cause = ('nftables table %s %s, chain %s (hook %s) %ss %s: an accept in iptables cannot override a %s in '
                 'another nftables table.' % (table['family'], table['name'], chain['name'], chain['hook'], verdict,
                                              rule['text'], verdict))
        fix = ('Switch libvirt to its iptables backend: firewall_backend = "iptables" in /etc/libvirt/network.conf, or '
               'expose_libvirt_firewall_backend: iptables.' if libvirt else
               'Allow the forward in that table too, or remove the rule (it is not kvmnet.nat\'s).')
        return _fail('; '.join(details + ['nftables: %s %s rejects' % (table['family'], table['name'])]), cause, fix)
    if view.nft is None:
        details.append('nftables: not read (%s)' % (view.nft_error or 'nft not installed'))
    if view.backend.policy(fam.tables, 'filter', 'FORWARD')[1] == 'DROP':
        details.append('FORWARD policy DROP (Docker sets it): only an accept lets a forward through')
    return Check(True, '; '.join(details))


_JUMP_HARM = {
    'PREROUTING': 'packets from outside never reach kvmnet.nat\'s DNAT rules',
    'OUTPUT': 'connections from this host to the public address are not DNATed',
    'POSTROUTING': 'none of kvmnet.nat\'s MASQUERADE rules applies (hairpin, masquerade: always)',
    'FORWARD': 'forwarded packets never reach kvmnet.nat\'s accept and meet libvirt\'s REJECT (or the policy) instead',
}


def _jump_packet(fwd, view, chain):
    outside, hairpin = trips(fwd, view)
    if chain == 'PREROUTING':
        return outside.packet
    if chain == 'OUTPUT':
        return local_packet(fwd, view)
    if chain == 'POSTROUTING' and fwd.masquerade == 'auto' and hairpin is not None and hairpin.after is not None:
        return hairpin.after                   # what our POSTROUTING rules are there for
    return outside.after or after_dnat(fwd, view, outside.packet)


def _does_our_job(view, fwd, chain, outcome):
    """A rule above our jump that takes the packet does what our rules would: the forward still works."""
    if chain == 'FORWARD':
        return outcome.target == 'ACCEPT'
    if chain in ('PREROUTING', 'OUTPUT'):
        guest = address_text(fwd.guest_ip)
        return dnat_to(view, outcome) in ((guest, fwd.guest_ports.first), (guest, None))
    return outcome.target in ('MASQUERADE', 'SNAT') or fwd.masquerade == 'never'


def owned(view, fam):
    """Whether kvmnet.nat's chains are in the family's tables, looked up once per run."""
    key = ('owned', fam.family, id(fam))
    if key not in view.memo:
        view.memo[key] = view.backend.owned(fam.tables)
    return view.memo[key]


def _hooks(view, fam):
    """{(table, built-in chain): [rule numbers of our jump]} of every hook we need, read once per run."""
    key = ('hooks', fam.family, id(fam))
    if key not in view.memo:
        view.memo[key] = view.backend.hooks(fam.tables)
    return view.memo[key]


def check_jumps(fwd, view):
    fam = view.families[fwd.family]
    if not owned(view, fam):
        return Check(None, 'no kvmnet.nat chains here: the rules below are this host\'s own')
    details, causes = [], []
    noun = view.backend.hook_noun()
    for (table_name, chain), positions in _hooks(view, fam).items():
        present, policy = view.backend.policy(fam.tables, table_name, chain)
        label = view.backend.hook_label(fam.tables, table_name, chain)
        if not positions and chain == 'FORWARD' and policy is None:
            details.append('%s: no %s (every forwarded packet passes)'
                           % (label, 'such chain' if present else 'filter table'))
            continue
        if not positions:
            harm = _JUMP_HARM[chain]
            if chain == 'FORWARD' and policy == 'DROP':
                harm = 'forwarded packets never reach kvmnet.nat\'s accept, and FORWARD\'s policy is DROP (Docker ' \
                       'sets it): every forward is dropped'
            causes.append(('Our %s in %s is missing: %s.' % (noun, label, harm),
                           '%s (or kvmnet-nat-restore start); it puts the %s back at the top.'
                           % (RUN_EXPOSE.capitalize(), noun)))
            details.append('%s: missing' % label)
            continue
        if len(positions) > 1:
            causes.append(('Our %s is in %s %d times (rules %s).' % (noun, label, len(positions), ', '.join(map(str, positions))),
                           '%s: it keeps exactly one.' % RUN_EXPOSE.capitalize()))
        if positions[0] == 1:
            details.append('%s: first' % label)
            continue
        outcome = walk_in(view, fwd.family, table_name, chain, _jump_packet(fwd, view, chain))
        hook_chain = view.backend.hook_chain(fam.tables, table_name, chain)
        first = next((step for step in outcome.path if step[0] == hook_chain), None)
        above = first is not None and first[1] < positions[0]
        if outcome.unfinished:
            details.append('%s: rule %d; the walk could not finish (%s)' % (label, positions[0], outcome.unfinished))
        elif above and view.backend.ends(outcome) and _does_our_job(view, fwd, chain, outcome):
            details.append('%s: rule %d, below %s, which %ss the packet as ours would'
                           % (label, positions[0], where(table_name, outcome), outcome.target.lower()))
        elif above and view.backend.ends(outcome):
            causes.append(('Above our %s in %s, %s %ss this forward\'s packets.'
                           % (noun, label, where(table_name, outcome), outcome.target.lower()),
                           '%s: it moves the %s back to the top (or delete that rule).' % (RUN_EXPOSE.capitalize(), noun)))
            details.append('%s: rule %d, below a rule that takes the packet' % (label, positions[0]))
        else:
            details.append('%s: rule %d (%d rule(s) above take nothing of this forward)'
                           % (label, positions[0], positions[0] - 1))
    return Check(not causes, '; '.join(details), causes)


def _stop_cause(view, table_name, outcome, port, dst, fwd, before):
    fix = view.backend.accept_fix(outcome.rule, before_dnat=before == 'before any DNAT')
    return ('%s %ss %s to %s %s: the packet never reaches %s.'
            % (where(table_name, outcome), outcome.target.lower(), port, dst, before, fwd.guest),
            fix or 'Remove or narrow that rule (it is not kvmnet.nat\'s), or insert an ACCEPT for %s above it.' % port)


def _diverted(view, table_name, outcome, what, to):
    """('break' or 'doubt', (cause, fix)) when the rule that ended the walk hands the packet to a local proxy
    (TPROXY: a break, the packet never goes on to ``to``) or to a program in user space (QUEUE, NFQUEUE
    without --queue-bypass: a doubt, the doctor cannot read what the program decides); else None."""
    if outcome.rule is None:
        return None
    how = view.backend.diverts(outcome.rule[2])
    if how == 'proxy':
        return 'break', ('%s hands %s to a local transparent proxy (TPROXY): it never goes on to %s, and with no '
                         'socket on the proxy\'s port the kernel drops it.' % (where(table_name, outcome), what, to),
                         'Remove or narrow that rule (it is not kvmnet.nat\'s) so that it does not take this forward\'s '
                         'packets.')
    if how == 'queue':
        return 'doubt', ('%s hands %s to a program in user space (%s): the doctor cannot tell what that program '
                         'decides, and with no program reading the queue the kernel drops every packet.'
                         % (where(table_name, outcome), what, outcome.target),
                         'Check that a program reads that queue (cat /proc/net/netfilter/nfnetlink_queue lists the '
                         'queues in use), add --queue-bypass, or narrow the rule.')
    return None


def _unfinished(view, table_name, chain, outcome, what=''):
    last = outcome.path[-1] if outcome.path else None
    name = _place(table_name, last[0]) if last and ' ' in last[0] else '%s %s' % (table_name, chain)
    return ('%sThe walk through %s could not finish: %s; the doctor cannot say whether the packet passes.'
            % (what, name, outcome.unfinished),
            'Look at that chain with %s (the kernel refuses loops in the rules it runs).' % view.backend.listing(table_name))


def _harmful(view, table_name, chain, item, fwd):
    """Would a rule passed over (an Outcome.uncertain item) keep the packet from the guest if it matched?"""
    effect = item[5]
    if table_name == 'nat' and chain == 'PREROUTING':
        if effect == 'take':
            return not (view.backend.target(item[2]) == 'DNAT' and
                        view.backend.destination(item[2])[0] == address_text(fwd.guest_ip))
        return effect in ('stop', 'return')
    if table_name == 'nat':
        return False                    # POSTROUTING: the masquerade findings say what is missing
    return effect == 'stop'


def _doubts(view, fwd, trip_, port, what, details):
    """Rules passed over on the way that could have stopped the packet: a match the doctor does not read is a
    doubt (the verdict cannot be ok); one that depends on the client's address is noted in the details."""
    doubts, some, count = [], [], 0
    for table_name, chain, outcome in trip_.stages():
        count += len(outcome.uncertain)
        for item in outcome.uncertain:
            if not _harmful(view, table_name, chain, item, fwd):
                continue
            text = '%s (%s)' % (_place(table_name, item[0], item[1]), item[2])
            if item[4] == 'varies':
                some.append(text)
                continue
            doubts.append(('%s%s was not evaluated (the doctor does not read %s): if it matches, it keeps %s from %s.'
                           % (what, text, item[3], port, fwd.guest),
                           'Check that rule by hand (%s), or narrow it so that it cannot take this forward\'s '
                           'packets.' % view.backend.inspect(table_name, item)))
    if some:
        details.append('%sstops some clients: %s%s' % (what, some[0], ' and %d more' % (len(some) - 1) if len(some) > 1 else ''))
    return doubts, count


def _before_dnat(fwd, view, outside, port):
    """(findings, doubts) when a table before nat PREROUTING stops, diverts or untracks the client's first
    packet, or a walk there (nat PREROUTING's included) cannot finish; None when it reaches the DNAT."""
    dst = outside.packet['dst']
    for table_name, chain, outcome in outside.arriving:
        if outcome.unfinished:
            return [], [_unfinished(view, table_name, chain, outcome)]
        if outcome.stopped:
            return [_stop_cause(view, table_name, outcome, port, dst, fwd, 'before any DNAT')], []
        diverted = _diverted(view, table_name, outcome, '%s to %s' % (port, dst), fwd.guest)
        if diverted is not None:
            return ([diverted[1]], []) if diverted[0] == 'break' else ([], [diverted[1]])
        if outcome.untracked:
            return [('%s exempts %s to %s from connection tracking: the nat table never sees an untracked packet, so '
                     'no DNAT takes it.' % (where(table_name, outcome, outcome.untracked), port, dst),
                     'Remove or narrow that NOTRACK rule (it is not kvmnet.nat\'s).')], []
    if outside.pre.unfinished:
        return [], [_unfinished(view, 'nat', 'PREROUTING', outside.pre)]
    return None


def _dnat_findings(fwd, view, outside, port, details):
    """nat PREROUTING: (findings, doubts) when no DNAT sends the packet to the guest (the walk ends there), else
    None; a DNAT to the guest is noted in ``details`` (and one without -d, not kvmnet.nat's, in ``scope``)."""
    pre, dst, guest = outside.pre, outside.packet['dst'], address_text(fwd.guest_ip)
    if dnat_to(view, pre) in ((guest, fwd.guest_ports.first), (guest, None)):
        details.append('DNAT: %s' % where('nat', pre))
        return None
    if pre.target in ('DNAT', 'REDIRECT', 'NETMAP'):
        host, to_port = dnat_to(view, pre) if pre.target == 'DNAT' else ('this host', None)
        host = host or 'another address'
        return [('%s to %s is sent to %s%s by %s, not to %s at %s.'
                 % (port, dst, host, ':%s' % to_port if to_port else '', where('nat', pre), fwd.guest, guest),
                 'Remove or narrow that rule, then %s.' % RUN_EXPOSE)], []
    ended = 'the nat walk ends at %s' % where('nat', pre) if pre.rule else 'no rule in nat PREROUTING takes it'
    return [('No DNAT takes %s to %s (%s): the packet stays on this host.' % (port, dst, ended),
             '%s to write the DNAT.' % RUN_EXPOSE.capitalize())], _doubts(view, fwd, outside, port, '', details)[0]


def _scope_findings(fwd, view, outside, port):
    """A DNAT to the guest that is not kvmnet.nat's and has no -d takes the port on every address."""
    pre, dst = outside.pre, outside.packet['dst']
    if view.backend.is_ours(pre.rule[2]) or view.backend.names_destination(pre.rule[2]):
        return []
    match = '-d' if not view.backend.walks_nftables else 'ip daddr' if fwd.family == 4 else 'ip6 daddr'
    return [('The DNAT (%s) has no %s: it takes %s on every address of this host and from traffic '
             'routed through it, not only on %s.' % (where('nat', pre), match, port, dst),
             'Add %s %s to it, or let kvmnet.nat write the forward (%s).' % (match, dst, RUN_EXPOSE))]


def _forwarded_findings(fwd, view, outside, port, details):
    """(findings, doubts, unfinished) of the packet after the DNAT, from mangle FORWARD to mangle POSTROUTING:
    the first table that stops or diverts it; ``unfinished`` (cause, fix) when a walk there cannot finish."""
    guest = address_text(fwd.guest_ip)
    if outside.after is None:           # a DNAT to this guest with another port: nothing was walked after it
        after = after_dnat(fwd, view, outside.packet)
        outside.forwarded = [(t, c, walk_in(view, fwd.family, t, c, after)) for t, c in FORWARDED]
        outside.after, outside.post = after, walk_in(view, fwd.family, 'nat', 'POSTROUTING', after)
    findings, early = [], []
    for table_name, chain, outcome in outside.forwarded:
        if outcome.unfinished:
            return findings, early, _unfinished(view, table_name, chain, outcome)
        diverted = _diverted(view, table_name, outcome, '%s to %s' % (port, guest), fwd.guest)
        if diverted is not None:
            (findings if diverted[0] == 'break' else early).append(diverted[1])
            break
        if table_name == 'filter':
            if outcome.target == 'ACCEPT':
                details.append('accept: %s' % (where('filter', outcome) if outcome.rule else 'FORWARD policy ACCEPT'))
                continue
            findings.append(_filter_stop(fwd, view, outside.after, outcome, port, guest))
            break
        if outcome.stopped:
            findings.append(_stop_cause(view, table_name, outcome, port, guest, fwd, 'after the DNAT'))
            break
    return findings, early, None


def _masquerade_findings(fwd, outside, port, details):
    post = outside.post
    masqueraded = post.target in ('MASQUERADE', 'SNAT')
    if masqueraded:
        details.append('masquerade: %s' % where('nat', post))
    if fwd.masquerade == 'always' and not masqueraded:
        return [('masquerade: always, but no MASQUERADE or SNAT applies to %s to %s: the guest answers through its own '
                 'gateway.' % (port, address_text(fwd.guest_ip)), '%s to write it.' % RUN_EXPOSE.capitalize())]
    return []


def _passed_over(fwd, view, trips_, port, details):
    """(the client's, the reply's and the hairpin packet's) doubts of the rules passed over on their ways, noted
    in ``details`` in that order, then how many of the client's were not evaluated."""
    outside, reply, hairpin = trips_
    doubts, count = _doubts(view, fwd, outside, port, '', details)
    others = _doubts(view, fwd, reply, port, 'replies: ', details)[0]
    if hairpin is not None and hairpin.after is not None and fwd.masquerade != 'never':
        others.extend(_doubts(view, fwd, hairpin, port, 'hairpin: ', details)[0])
    if count:
        first = next(item for _t, _c, outcome in outside.stages() for item in outcome.uncertain)
        details.append('%d rule(s) not evaluated (first: %s uses %s)' % (count, _place('', first[0], first[1]).strip(),
                                                                         first[3]))
    return doubts, others


def _rules_findings(fwd, view, fam):
    """What happens to the forward's packets, table by table: (findings [(cause, fix)], details, doubts)."""
    outside, hairpin = trips(fwd, view)
    port = '%s/%d' % (fwd.proto, fwd.host_ports.first)
    details = []
    stopped = _before_dnat(fwd, view, outside, port) or _dnat_findings(fwd, view, outside, port, details)
    if stopped is not None:
        return stopped[0], details, stopped[1]
    scope = _scope_findings(fwd, view, outside, port)
    findings, early, unfinished = _forwarded_findings(fwd, view, outside, port, details)
    if unfinished is not None:
        return findings, details, [unfinished]
    reply = reply_trip(fwd, view)
    replies, reply_doubts = _reply_findings(view, fwd, reply, details)
    findings.extend(replies)
    findings.extend(_masquerade_findings(fwd, outside, port, details))
    hairpin_findings, hairpin_doubts = _hairpin_findings(view, fwd, hairpin, details)
    findings.extend(hairpin_findings)
    findings.extend(scope)
    findings.extend(_declaration_findings(fwd, view, fam))
    client, others = _passed_over(fwd, view, (outside, reply, hairpin), port, details)
    return findings, details, early + client + reply_doubts + hairpin_doubts + others


def _filter_stop(fwd, view, forwarded, outcome, port, guest):
    fix = view.backend.accept_fix(outcome.rule)
    if fix is not None:             # nftables: every base chain on the forward hook, a policy named as a rule
        return ('%s %ss %s to %s %s.' % (where('filter', outcome), outcome.target.lower(), port, fwd.guest, guest), fix)
    if outcome.policy or outcome.rule is None:
        return ('No rule in filter FORWARD accepts %s to %s %s and FORWARD\'s policy is %s.'
                % (fwd.proto, fwd.guest, guest, outcome.target or 'not known'),
                '%s: it writes the accept above everything else.' % RUN_EXPOSE.capitalize())
    accept = _first_accept_below(view, fwd.family, forwarded, outcome)
    below = ' before the accept at filter %s rule %d (%s)' % accept if accept else ''
    libvirt = outcome.rule is not None and 'LIBVIRT_' in (outcome.rule[0] + outcome.rule[2])
    return ('%s %ss %s to %s%s%s.' % (
        where('filter', outcome), outcome.target.lower(), port, guest, below,
        ' (libvirt\'s REJECT: an accept appended below it never matches)' if libvirt else ''),
        '%s: its accept goes above libvirt\'s rules (or insert yours with iptables -I FORWARD 1).'
        % RUN_EXPOSE.capitalize())


def _first_accept_below(view, family, packet, outcome):
    """The accept the packet would have met had the rules that stopped it not been there (a hand-made
    accept appended below libvirt's REJECT), as (chain, index, spec), or None."""
    rules = ruleset(view, family, 'filter')
    if rules is None or outcome.rule is None:
        return None
    skip, current = set(), outcome
    for _attempt in range(16):
        if current.rule is None:
            return None
        skip.add(current.rule[:2])
        current = view.backend.follow(rules, 'FORWARD', packet, skip=skip)
        if current.rule is None or current.unfinished:
            return None
        if current.target == 'ACCEPT':
            return current.rule
    return None


def _hairpin_findings(view, fwd, hairpin, details):
    """(findings, doubts) of the hairpin packet."""
    if fwd.masquerade == 'never' or hairpin is None or hairpin.after is None:
        return [], []       # guests reaching the public address are not DNATed: nothing to answer for
    packet = hairpin.packet
    for table_name, chain, outcome in hairpin.arriving + hairpin.forwarded:
        if outcome.stopped:
            return [('Hairpin traffic stops: guests on %s that connect to %s:%d %s %s at %s (%s %ss them).'
                     % (fwd.guest_network, packet['dst'], fwd.host_ports.first,
                        'are DNATed to' if (table_name, chain) in FORWARDED else 'are meant for', fwd.guest,
                        address_text(fwd.guest_ip), where(table_name, outcome), outcome.target.lower()),
                     view.backend.accept_fix(outcome.rule, ' (hairpin traffic included)') or
                     'Remove or narrow that rule (it is not kvmnet.nat\'s), or insert an ACCEPT for them above it.')], []
        diverted = _diverted(view, table_name, outcome, 'hairpin traffic (guests on %s that connect to %s:%d)'
                             % (fwd.guest_network, packet['dst'], fwd.host_ports.first), fwd.guest)
        if diverted is not None:
            return ([diverted[1]], []) if diverted[0] == 'break' else ([], [diverted[1]])
    post = hairpin.post
    if post.target in ('MASQUERADE', 'SNAT'):
        details.append('hairpin: %s' % where('nat', post))
        return [], []
    return [('No MASQUERADE for hairpin traffic: guests on %s that connect to %s:%d are DNATed to %s, which answers '
             'them directly, past the DNAT, so they get no reply.'
             % (fwd.guest_network, packet['dst'], fwd.host_ports.first, fwd.guest),
             view.backend.masquerade_fix(fwd.guest_network, address_text(fwd.guest_ip)))], []


def _reply_findings(view, fwd, reply, details):
    """(findings, doubts) of the guest's reply to the client's first packet: a rule that drops it, rejects it,
    takes it away or exempts it from connection tracking (then it is not un-NATed) cuts the connection as
    surely as one that stops the client's packet."""
    guest = address_text(fwd.guest_ip)
    what = '%s\'s replies (%s from %s:%d to the client)' % (fwd.guest, fwd.proto, guest, fwd.guest_ports.first)
    fix = ('Remove or narrow that rule (it is not kvmnet.nat\'s), or insert an ACCEPT for -s %s -p %s --sport %d '
           '-m conntrack --ctstate ESTABLISHED above it.' % (guest, fwd.proto, fwd.guest_ports.first))
    for table_name, chain, outcome in reply.stages():
        if outcome.unfinished:
            return [], [_unfinished(view, table_name, chain, outcome, 'Replies: ')]
        if outcome.untracked:
            return [('%s exempts %s from connection tracking: they are not un-NATed, so they leave with the guest\'s '
                     'address, which the client never sent to, and the connection never completes.'
                     % (where(table_name, outcome, outcome.untracked), what),
                     'Remove or narrow that NOTRACK rule (it is not kvmnet.nat\'s).')], []
        diverted = _diverted(view, table_name, outcome, what, 'the client')
        if diverted is not None:
            return ([diverted[1]], []) if diverted[0] == 'break' else ([], [diverted[1]])
        if outcome.rule is not None and outcome.stopped:
            return [('%s %ss %s: the connection never completes.' % (where(table_name, outcome),
                                                                     outcome.target.lower(), what),
                     view.backend.accept_fix(outcome.rule, ' (their replies included)') or fix)], []
        if outcome.rule is None and outcome.target != 'ACCEPT' or table_name == 'filter' and outcome.target != 'ACCEPT':
            return [('No rule in %s %s accepts %s and its policy is %s: the connection never completes.'
                     % (table_name, chain, what, outcome.target or 'not known'), fix)], []
        if table_name == 'filter':
            details.append('replies: %s' % (where('filter', outcome) if outcome.rule else 'FORWARD policy ACCEPT'))
    return [], []


def _live_ours(view, fam):
    """Our rules in the family's live tables (the backend's), made once per run."""
    key = ('live', fam.family, id(fam))
    if key not in view.memo:
        view.memo[key] = view.backend.ours(fam.tables)
    return view.memo[key]


def _declaration_findings(fwd, view, fam):
    """kvmnet.nat's own rules for the forward, against its declaration."""
    if not owned(view, fam):
        return []
    missing = view.backend.missing(_live_ours(view, fam), fam.tables, fwd)
    if not missing:
        return []
    return [('kvmnet.nat\'s rules for this forward differ from its declaration (no matching %s): the inventory '
             'changed since the last run, or a rule was edited by hand.' % ', '.join(sorted(set(missing))),
             '%s.' % RUN_EXPOSE.capitalize())]


def check_rules(fwd, view):
    fam = view.families[fwd.family]
    findings, details, doubts = _rules_findings(fwd, view, fam)
    return Check(False if findings else (None if doubts else True), '; '.join(details) or 'no rule takes it',
                 findings, doubts)


def _once(view, key, make):
    """``make()``, made once per run for ``key`` (what every forward of a run shares)."""
    if key not in view.memo:
        view.memo[key] = make()
    return view.memo[key]


def _saved_state(view, family):
    """(header fields, saved lines, the file the declared forwards would be saved as, its lines): the
    same for every forward of the family, so made once per run."""
    fam, desired, backend = view.families[family], view.desired.get(family), view.backend
    key = ('saved', family, fam.saved_text, fam.flavour, id(desired))
    if key not in view.memo:
        fields, body = backend.read_persisted(fam.saved_text)
        expected = backend.persisted_text(desired, fam.flavour)
        wanted = set(backend.saved_lines(backend.read_persisted(expected)[1])) if expected else set()
        view.memo[key] = (fields, set(backend.saved_lines(body)), expected, wanted)
    return view.memo[key]


def check_saved(fwd, view):
    fam = view.families[fwd.family]
    if fam.saved_path is None:
        return Check(None, 'not checked (no persist_path)')
    if fam.saved_text is None:
        if not owned(view, fam):
            return Check(None, 'no saved rules at %s (not set up by kvmnet.nat)' % fam.saved_path)
        return _fail('%s missing' % fam.saved_path, 'No saved rules at %s: a reboot restores none of the forwards.'
                     % fam.saved_path, '%s: it saves exactly what it applies.' % RUN_EXPOSE.capitalize())
    fields, saved, expected, wanted = _saved_state(view, fwd.family)
    if not fields['valid']:
        return _fail('%s: checksum does not match' % fam.saved_path,
                     '%s was edited, cut short or damaged (its checksum does not match): kvmnet-nat-restore refuses '
                     'it, so neither a reboot nor the libvirt hook restores any of the forwards (the hook logs it to the '
                     'journal, tag kvmnet-nat-hook).' % fam.saved_path,
                     '%s: it writes the file again.' % RUN_EXPOSE.capitalize())
    if expected is not None and _once(view, ('saved equal', fam.saved_text, id(expected)), lambda: fam.saved_text == expected):
        return Check(True, '%s matches the declared forwards' % fam.saved_path)
    mine = view.backend.forward_rules(fwd)
    specs = _once(view, ('saved specs', fam.saved_text), lambda: view.backend.saved_rules(saved))
    absent = [spec for spec in mine if spec not in specs]
    stale, lacking = len(saved - wanted), len(wanted - saved)
    if absent:
        cause = ('%s does not hold this forward: a reboot (or libvirt\'s hook) would restore the rules without it.'
                 % fam.saved_path)
    else:
        cause = ('%s is out of date (%d saved line(s) not declared, %d declared line(s) not saved): a reboot would '
                 'restore other rules than the declared ones.' % (fam.saved_path, stale, lacking))
    return _fail('%s differs from the declared forwards' % fam.saved_path, cause,
                 '%s: it saves exactly what it applies.' % RUN_EXPOSE.capitalize())


def check_counters(fwd, view):
    fam = view.families[fwd.family]
    counter = view.backend.counter
    outside = trips(fwd, view)[0]
    pre = outside.pre
    dnat = counter(fam.tables, 'nat', pre.rule) if pre.target == 'DNAT' else None
    accept_walk = next((outcome for t, _c, outcome in outside.forwarded if t == 'filter'), None)
    accept = counter(fam.tables, 'filter', accept_walk.rule) \
        if accept_walk is not None and accept_walk.target == 'ACCEPT' else None
    seen = 'DNAT %s, %s accept %s packet(s) since the rules were made' % (
        '-' if dnat is None else dnat, 'FORWARD' if not view.backend.walks_nftables else 'forward hook',
        '-' if accept is None else accept)
    probe = view.probes.get(fwd.label)
    if probe is None:
        hint = ''
        if dnat and accept == 0:
            hint = ' (DNATed packets never reached the accept: from outside, something before it drops them)'
        return Check(None, seen + hint + ('' if fwd.proto != 'tcp' else '; doctor_probe=true tests one connection now'))
    if probe.get('skipped'):
        return Check(None, '%s; probe: %s' % (seen, probe['skipped']))
    delta = probe.get('delta')
    answer = probe.get('answer', '')
    if delta:
        return Check(True, '%s; probe: a connection from this host to %s:%d was DNATed (+%d) and %s'
                     % (seen, probe['address'], fwd.host_ports.first, delta, answer))
    if probe.get('uncounted') and not probe.get('error'):
        return Check(True, '%s; probe: a connection from this host to %s:%d was DNATed by %s (it keeps no counter) and %s'
                     % (seen, probe['address'], fwd.host_ports.first, probe['uncounted'], answer))
    taken = probe.get('taken') or 'no DNAT rule'
    return _fail('%s; probe: not DNATed (%s), %s' % (seen, taken, answer),
                 'A connection from this host to %s:%d was not DNATed by this forward (%s): its traffic goes '
                 'elsewhere.' % (probe['address'], fwd.host_ports.first, taken),
                 'See the rules and listener columns; %s.' % RUN_EXPOSE)


CHECK_FUNCTIONS = {'forwarding': check_forwarding, 'layout': check_layout, 'jumps': check_jumps,
                   'rules': check_rules, 'saved': check_saved, 'counters': check_counters,
                   'listener': check_listener, 'guest': check_guest, 'route': check_route}


def diagnose(fwd, view):
    """One forward: every check, and the verdict (the first failing check's first cause)."""
    checks, causes, doubts = {}, [], []
    for name in CHECKS:
        result = CHECK_FUNCTIONS[name](fwd, view)
        checks[name] = {'ok': result.ok, 'detail': result.detail}
        causes.extend({'check': name, 'cause': cause, 'fix': fix} for cause, fix in result.causes)
        doubts.extend({'check': name, 'cause': cause, 'fix': fix, 'unknown': True} for cause, fix in result.doubts)
    first = (causes + doubts)[0] if causes or doubts else None
    verdict_ = 'broken' if causes else 'unknown' if doubts else 'ok'
    return {'label': fwd.label, 'guest': fwd.guest, 'guest_ip': address_text(fwd.guest_ip), 'proto': fwd.proto,
            'host_port': str(fwd.host_ports), 'guest_port': str(fwd.guest_ports), 'checks': checks,
            'verdict': verdict_, 'failed': first['check'] if first else None,
            'cause': first['cause'] if first else None, 'fix': first['fix'] if first else None, 'causes': causes + doubts}


def unresolved(guest, label, reason):
    """A forward whose guest address is not known: nothing to walk."""
    checks = {name: {'ok': None, 'detail': 'not checked: no address'} for name in CHECKS}
    checks['guest'] = {'ok': False, 'detail': reason}
    cause = 'No address is known for %s: %s.' % (guest, reason)
    fix = 'Declare ip for %s in the inventory, or start it so that libvirt leases it one.' % guest
    return {'label': label, 'guest': guest, 'guest_ip': None, 'checks': checks, 'verdict': 'broken', 'failed': 'guest',
            'cause': cause, 'fix': fix, 'causes': [{'check': 'guest', 'cause': cause, 'fix': fix}]}


def table(results):
    """The console table: one row per forward, a column per check, the verdict; then the causes."""
    heads = ['forward'] + list(CHECKS) + ['verdict']
    rows = [[r['label']] + [MARKS[r['checks'][name]['ok']] for name in CHECKS] +
            ['ok' if r['verdict'] == 'ok' else '%s (%s)' % (r['verdict'], r['failed'])] for r in results]
    widths = [max(len(row[i]) for row in [heads] + rows) for i in range(len(heads))]
    lines = ['  '.join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in [heads] + rows]
    for r in results:
        for item in r['causes']:
            check = item['check'] + (', unknown' if item.get('unknown') else '')
            lines.append('%s [%s]: %s Fix: %s' % (r['label'], check, item['cause'], item['fix']))
    return lines
