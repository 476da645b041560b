#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: doctor
short_description: Say where a forward's packets stop, and why
version_added: 1.0.0
description:
  - Read only. For every forward given (or the ones O(guest) and O(port) select), runs nine checks in
    the order a packet meets them and reports each one, and the first failing one as a one-sentence
    cause with its fix.
  - C(forwarding) the forwarding sysctl of the family, and for IPv4 C(net.ipv4.conf.<interface>.forwarding) of
    the public interface (the clients' packets arrive there) and of the guest's bridge (its replies arrive
    there), each of which can stop forwarding while C(net.ipv4.ip_forward) is 1 (IPv6 forwards by
    C(net.ipv6.conf.all.forwarding) alone, so a per-interface 0 is only reported); C(rp_filter) strict on the public
    interface when the route back to the clients leaves elsewhere; C(br_netfilter) state (reported).
  - C(layout) the iptables flavour (rules in both legacy and nf_tables), firewalld running, nftables
    tables other than iptables-nft's own that drop or reject on the forward or prerouting hook
    (libvirt's nftables backend), Docker's FORWARD policy DROP (reported).
  - C(jumps) the collection's jump in nat C(PREROUTING), C(OUTPUT), C(POSTROUTING) and filter
    C(FORWARD), present, once and first; if not first, whether a rule above takes this forward's packets.
  - C(rules) the forward's packets walked through the live ruleset as the kernel would, every table in
    the kernel's order (an outside client's first packet in raw, mangle and nat C(PREROUTING), the same
    packet after the DNAT in mangle, filter and security C(FORWARD), mangle and nat C(POSTROUTING); the
    guest's reply, ESTABLISHED, from its bridge to the public interface, in raw and mangle C(PREROUTING),
    mangle, filter and security C(FORWARD) and mangle C(POSTROUTING) (not nat, which sees only a connection's
    first packet), where a NOTRACK in raw keeps the reply from being un-NATed; a hairpin packet from
    another guest of its network the same way), the table, chain and rule that takes or stops each, a DNAT
    to another address, an accept below libvirt's REJECT, a DNAT without C(-d), a missing MASQUERADE; and
    the collection's own rules against the declaration. Rules written by hand are diagnosed the same way.
    A C(TPROXY) that takes the packet is a break (it goes to a local proxy, never to the guest); C(NFQUEUE)
    without C(--queue-bypass) or C(QUEUE) makes the verdict V(unknown), naming the rule (a program decides;
    with none reading the queue, the kernel drops the packet). A table or chain the host does not have lets
    the packet pass, as its policy ACCEPT would.
  - C(saved) the saved rules (O(persist_path)) against the declared forwards, which is what a reboot restores.
  - C(counters) packet counts of the DNAT and the accept the packets meet; with O(probe), one TCP
    connection from this host to the public address, and whether this forward's DNAT counted it.
  - C(listener) a host process listening on the public port (the nginx case), with its name and PID.
  - C(guest) the domain exists and runs, its address is still the one the rules use (lease, agent) and
    no other machine holds it, its port answers a connection from this host.
  - C(route) the guest's default gateway, where libvirt hands it out, is this host (else
    O(forwards[].masquerade=auto) cannot work).
extends_documentation_fragment:
  - kvmnet.nat.forward
author:
  - kvmnet.nat maintainers (!UNKNOWN)
attributes:
  check_mode:
    support: full
    description: The module only reads; it runs the same in check mode.
  diff_mode:
    support: none
    description: Nothing changes, so there is nothing to diff.
  platform:
    platforms: posix
    support: full
    description: Linux with iptables; libvirt (C(virsh)) and C(nft) are used when present.
options:
  forwards:
    description:
      - The declared forwards of this host, as M(kvmnet.nat.forwards) takes them, every one of them (the
        saved rules are compared with all of them); O(guest) and O(port) select which are diagnosed.
    type: list
    elements: dict
    required: true
    suboptions:
      guest:
        description: Name of the guest (libvirt domain).
        type: str
        required: true
      guest_ip:
        description:
          - Address of the guest. When omitted, the address the collection's DNAT rule for this forward
            sends to, else the guest's address in libvirt.
        type: str
      proto:
        description: V(tcp), V(udp) or V(sctp).
        type: str
        default: tcp
      host_port:
        description: Port or range on the public side.
        type: raw
        required: true
      guest_port:
        description: Port or range on the guest; defaults to O(forwards[].host_port).
        type: raw
      sources:
        description: Allow-list of source addresses or networks.
        type: list
        elements: str
        default: []
      masquerade:
        description: V(auto), V(always) or V(never), as in M(kvmnet.nat.forwards).
        type: str
        default: auto
      public_ip:
        description: Overrides O(public_ip) for this forward.
        type: str
      in_interface:
        description: Overrides O(in_interface) for this forward.
        type: str
      guest_network:
        description: The guest's network (CIDR); found from the host's connected routes when omitted.
        type: str
      allow_in_use:
        description: A host process listening on the host port is intended (the C(listener) check passes).
        type: bool
        default: false
      send:
        description: For a UDP forward, a datagram to send to the guest port from this host (checks the guest).
        type: str
      expect:
        description:
          - For a UDP forward, a Python regular expression that must be found in the guest's answer.
          - Bounded as in M(kvmnet.nat.probe) - at most 256 characters, searched in the answer's first 512
            characters, in a child process stopped after 1 second (a pattern that takes longer fails the check).
        type: str
  persist_path:
    description:
      - Base name of the saved rules (C(<persist_path>.v4), C(.v6)) to compare; not checked when omitted.
    type: path
  uri:
    description: libvirt connection URI.
    type: str
    default: qemu:///system
  guest:
    description: Diagnose only the forwards of this guest.
    type: str
  port:
    description: Diagnose only the forwards whose host port (or range) holds this port.
    type: int
  probe:
    description:
      - Make one TCP connection from this host to the public address of each selected TCP forward and read
        the DNAT rule's packet count before and after it.
      - The connection passes nat C(OUTPUT), not C(PREROUTING) or filter C(FORWARD) (the kernel sends a
        host's own packets through neither), so it proves the DNAT and the guest's answer; the FORWARD
        accept is shown by the walk and by the counters of real traffic.
      - A forward whose O(forwards[].sources) leave out this host's own address is not probed (its rules
        rightly do not forward this host's connection); its C(counters) check says so.
    type: bool
    default: false
  timeout:
    description: Seconds to wait for each connection (guest checks and O(probe)), 0.1 to 10.
    type: float
    default: 2.0
notes:
  - When O(public_ip) is omitted, the doctor takes the address of this host's default IPv4 route.
  - The module reads without the host lock of M(kvmnet.nat.forwards); a run of C(kvmnet.nat.expose) at the
    same moment can show a state half-way through a change. Run it again.
  - The walk evaluates the matches iptables-save prints for addresses, interfaces, protocols, ports,
    conntrack, state and address types. A rule with another match (an ipset, a mark, physdev) is passed
    over and counted in the C(rules) detail as not evaluated; if it could stop the packet, the verdict is
    V(unknown) and names it, never V(ok).
seealso:
  - module: kvmnet.nat.forwards
  - module: kvmnet.nat.probe
"""

EXAMPLES = r"""
- name: Diagnose every forward of this hypervisor
  kvmnet.nat.doctor:
    forwards:
      - {guest: web01, guest_ip: 192.168.122.10, host_port: 8080, guest_port: 80}
      - {guest: dns01, proto: udp, host_port: 5353, guest_port: 53, send: ping, expect: "."}
    persist_path: /etc/iptables/kvmnet-nat
  register: diagnosis

- name: Show the table
  ansible.builtin.debug:
    msg: "{{ diagnosis.table }}"

- name: Only web01's port 8080, with one connection from the hypervisor
  kvmnet.nat.doctor:
    forwards: "{{ declared_forwards }}"
    guest: web01
    port: 8080
    probe: true
"""

RETURN = r"""
forwards:
  description: One entry per selected forward, in the order given.
  returned: always
  type: list
  elements: dict
  contains:
    label:
      description: The forward as the collection names it.
      type: str
      sample: web01 tcp/8080->80
    guest_ip:
      description: The address diagnosed (declared, or found); null when none is known.
      type: str
    checks:
      description: "Each check by name: C(ok) (true, false, or null when not applicable or not checked) and C(detail)."
      type: dict
      sample: {forwarding: {ok: true, detail: net.ipv4.ip_forward = 1}}
    verdict:
      description:
      - V(ok), V(broken) when a check failed, or V(unknown) when none failed but the doctor could not tell
        (a rule on the way it cannot evaluate could stop the packet, or a walk it could not finish).
      type: str
    failed:
      description: The first failing check, or null.
      type: str
    cause:
      description: The first failing check's cause, one sentence.
      type: str
      sample: "filter FORWARD rule 2 -> LIBVIRT_FWI rule 2 (-o virbr0 -j REJECT ...) rejects tcp/8080 to 192.168.122.10."
    fix:
      description: What to do about it.
      type: str
    causes:
      description: Every failing check's causes in order, each with C(check), C(cause) and C(fix).
      type: list
      elements: dict
broken:
  description: Labels of the broken forwards.
  returned: always
  type: list
  elements: str
table:
  description: The report as lines of text; a column per check (✔, ✘, – for not applicable), then every cause with its fix.
  returned: always
  type: list
  elements: str
host:
  description: What was read about the host.
  returned: always
  type: dict
  contains:
    flavour:
      description: iptables flavour per family.
      type: dict
    public_ip:
      description: The public IPv4 address used.
      type: str
    libvirt:
      description: Whether libvirt could be read, or why not.
      type: str
    nftables:
      description: Whether the nftables ruleset could be read, or why not.
      type: str
matched:
  description: False when O(guest) and O(port) select none of the forwards (RV(msg) lists them); nothing was diagnosed.
  returned: always
  type: bool
msg:
  description: With RV(matched=false), which forwards this host declares.
  returned: when RV(matched) is false
  type: str
changed:
  description: Always false.
  returned: always
  type: bool
"""

import os
import time
from concurrent.futures import ThreadPoolExecutor

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kvmnet.nat.plugins.module_utils import _command
from ansible_collections.kvmnet.nat.plugins.module_utils import _connect
from ansible_collections.kvmnet.nat.plugins.module_utils import _doctor
from ansible_collections.kvmnet.nat.plugins.module_utils import _forward
from ansible_collections.kvmnet.nat.plugins.module_utils import _host
from ansible_collections.kvmnet.nat.plugins.module_utils import _listeners
from ansible_collections.kvmnet.nat.plugins.module_utils import _match
from ansible_collections.kvmnet.nat.plugins.module_utils import _routes
from ansible_collections.kvmnet.nat.plugins.module_utils import _schema
from ansible_collections.kvmnet.nat.plugins.module_utils._backend import RulesetError
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables import rules as _rules
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables import save as _save

FORWARD_KEYS = ('guest', 'guest_ip', 'proto', 'host_port', 'guest_port', 'sources', 'masquerade', 'public_ip',
                'in_interface', 'guest_network', 'allow_in_use')


def argument_spec():
    return dict(
        forwards=dict(type='list', elements='dict', required=True,
                      options=dict(_schema.forward_options(guest_ip_required=False), **_schema.DIAGNOSE_OPTIONS)),
        uri=dict(type='str', default='qemu:///system'),
        guest=dict(type='str'),
        port=dict(type='int'),
        probe=dict(type='bool', default=False),
        timeout=dict(type='float', default=2.0),
        **_schema.scope_options()
    )

# ---------------------------------------------------------------- reading the host, once (_host)


def _read_host(module, view):
    """Everything the checks read, once: addresses, default routes, each family's iptables in the flavour the
    engine uses, the saved files, sysctls, firewalld, the nftables ruleset and the guests in libvirt."""
    params = module.params
    view.interfaces = _routes.host_interfaces(module)
    view.default_dev, default_ip = _host.defaults(module, view.interfaces)
    if not params['public_ip'] and default_ip:
        params['public_ip'] = default_ip
    view.families = {family: _doctor.family_of(_host.iptables_saves(module, family), view.prefix)
                     for family in _forward.FAMILIES}
    if params['persist_path']:
        _read_saved(view, params['persist_path'])
    view.sysctl = _host.sysctls()
    view.firewalld = _host.firewalld_active(module)
    ruleset, view.nft_error = _host.nft_ruleset(module)
    view.nft = None if ruleset is None else _host.nft_tables(ruleset)
    host_ips = {iface.ip for iface, _dev in view.interfaces}
    view.libvirt, view.libvirt_error = _host.libvirt(module, params['uri'], {raw['guest'] for raw in params['forwards']},
                                                     host_ips)


def _nat_packets(module, fam):
    """The nat table again, with packet counts, from the flavour the rules are in (the probe's second read)."""
    out = _command.run(module, fam.save_cmd + ['-c', '-t', 'nat'], context='reading the IPv%d nat table' % fam.family)[1]
    return _save.parse_save(out).get('nat')


# ---------------------------------------------------------------- the forwards


def _label(raw):
    try:
        host = _forward.parse_ports(raw['host_port'])
        guest = _forward.parse_ports(raw['guest_port']) if raw.get('guest_port') not in (None, '') else host
    except (ValueError, TypeError):
        return None
    return '%s %s/%s->%s' % (raw['guest'], raw.get('proto') or 'tcp', host, guest)


def _fields(raw):
    """(parsed fields, problems) of one forward by the engine's own rules (_forward), its guest_ip left out
    when it has none: the doctor looks that up, and everything it prints is made from the parsed values."""
    problems = _forward._Problems()
    fields = _forward._parse_fields({k: v for k, v in raw.items() if k in FORWARD_KEYS}, problems)
    if raw.get('guest_ip') in (None, ''):
        problems = [p for p in problems if not p.startswith('guest_ip ')]
    return fields, list(problems)


def _parsed_label(raw):
    fields = _fields(raw)[0]
    return '%s %s/%s->%s' % (fields['guest'], fields['proto'], fields['host_ports'], fields['guest_ports'])


def _address_from_rules(view, label):
    """Where the collection's DNAT for this forward sends it, from the live rules (read once per run)."""
    if 'dnat by label' not in view.memo:
        found = {}
        for fam in view.families.values():
            for name, address in _save.dnat_destinations(fam.tables, view.prefix).items():
                found.setdefault(name, address)
        view.memo['dnat by label'] = found
    return view.memo['dnat by label'].get(label)


def _address_from_libvirt(view, guest):
    record = (view.libvirt or {}).get('domains', {}).get(guest)
    if record is None:
        return None
    return (record.get('ipv4') or record.get('ipv6') or [None])[0]


def _resolve(module, view, raws):
    """Fill in guest_ip where it is missing; (raw forwards with an address, unresolved results)."""
    complete, unresolved = [], []
    for raw in raws:
        if raw.get('guest_ip'):
            complete.append(raw)
            continue
        label = _parsed_label(raw)
        ip = _address_from_rules(view, label) or _address_from_libvirt(view, raw['guest'])
        if ip:
            complete.append(dict(raw, guest_ip=ip))
        else:
            unresolved.append(_doctor.unresolved(raw['guest'], label, 'no DNAT rule of kvmnet.nat names it and libvirt '
                                                 'has no address for it (%s)' % (view.libvirt_error or 'no lease or agent address')))
    return complete, unresolved


def _parse(module, raws):
    params = module.params
    clean = [{k: v for k, v in raw.items() if k in FORWARD_KEYS} for raw in raws]
    try:
        return _forward.parse_forwards(clean, params['public_ip'], params['public_ip6'], params['in_interface'])
    except _forward.ForwardError as exc:
        module.fail_json(msg='invalid forwards: %s' % exc, errors=exc.errors)


def _selected(module, fwd):
    guest, port = module.params['guest'], module.params['port']
    return (not guest or fwd.guest == guest) and (port is None or fwd.host_ports.first <= port <= fwd.host_ports.last)


def _answers(module, view, forwards, raws):
    """Connect from this host to each selected guest port (TCP, and UDP with send/expect), in parallel."""
    extra = {_label(r): r for r in raws}
    jobs = {}
    for fwd in forwards:
        record = (view.libvirt or {}).get('domains', {}).get(fwd.guest)
        if view.libvirt is not None and (record is None or record['state'] != 'running'):
            continue
        key = (_forward.address_text(fwd.guest_ip), fwd.proto, fwd.guest_ports.first)
        raw = extra.get(fwd.label) or {}
        if fwd.proto == 'udp' and not (raw.get('send') or raw.get('expect')):
            continue
        if fwd.proto in ('tcp', 'udp'):
            jobs[key] = (raw.get('send') or '', raw.get('expect'))
    timeout = module.params['timeout']

    def one(item):
        (ip, proto, port), (send, expect) = item
        answer, error = _connect.probe(ip, port, proto, send, timeout)
        if error:
            return (ip, proto, port), (False, error)
        try:
            if expect and not _match.search(expect, answer):
                return (ip, proto, port), (False, 'answered %r, which does not match %r' % (answer, expect))
        except _match.MatchTimeout as exc:
            return (ip, proto, port), (False, 'answered %r; %s' % (answer, exc))
        return (ip, proto, port), (True, answer)

    if jobs:
        with ThreadPoolExecutor(max_workers=min(16, len(jobs))) as pool:
            view.answers.update(pool.map(one, jobs.items()))


def _probe(module, view, forwards):
    """One TCP connection from this host to each selected forward's public address; the DNAT count before and after."""
    timeout = module.params['timeout']
    for fwd in forwards:
        if fwd.proto != 'tcp':
            view.probes[fwd.label] = {'skipped': 'only TCP forwards are probed'}
            continue
        fam = view.families[fwd.family]
        packet = _doctor.local_packet(fwd, view)
        if not packet['dst']:
            view.probes[fwd.label] = {'skipped': 'no public address'}
            continue
        if fwd.sources and not _doctor.allowed_source(fwd, packet['src']):
            view.probes[fwd.label] = {'skipped': 'this host (%s) is not in its sources, so its connection is not '
                                                 'forwarded, by design' % packet['src']}
            continue
        nat = fam.tables.get('nat')
        outcome = _doctor.walk(nat, 'OUTPUT', packet)
        rule = outcome.rule if outcome.target == 'DNAT' else None
        before = _doctor.counted(nat, rule)
        answer, error = _connect.probe(packet['dst'], fwd.host_ports.first, 'tcp', '', timeout)
        time.sleep(0.05)
        after = _doctor.counted(_nat_packets(module, fam), rule)
        record = {'address': packet['dst'], 'answer': ('got no answer (%s)' % error) if error else
                  ('the guest answered%s' % (' %r' % answer if answer else ''))}
        record['delta'] = (after - before) if rule and before is not None and after is not None else 0
        if not record['delta']:
            record['taken'] = _doctor.where('nat', outcome) if outcome.rule else 'no DNAT rule in nat OUTPUT takes it'
        view.probes[fwd.label] = record

# ---------------------------------------------------------------- the run


def _check_params(module):
    params = module.params
    problems = []
    if not _rules.valid_prefix(params['chain_prefix']):
        problems.append('chain_prefix %r must be 1-16 upper-case letters or digits' % (params['chain_prefix'],))
    if not 0.1 <= params['timeout'] <= 10:
        problems.append('timeout %s must be between 0.1 and 10 seconds' % params['timeout'])
    if params['persist_path'] and not os.path.isabs(params['persist_path']):
        problems.append('persist_path %r must be absolute' % (params['persist_path'],))
    if params['guest'] and not _forward._GUEST_NAME_RE.fullmatch(params['guest']):
        problems.append('guest %r must be 1-64 characters of letters, digits and ._+:@-' % (params['guest'],))
    if params['port'] is not None and not 1 <= params['port'] <= 65535:
        problems.append('port %s must be between 1 and 65535' % params['port'])
    for index, raw in enumerate(params['forwards']):
        if raw.get('guest_ip') in (None, ''):      # the others are parsed whole once their address is known
            problems.extend('forwards[%d]: %s' % (index, problem) for problem in _fields(raw)[1])
        for key in ('send', 'expect'):
            if raw.get(key) and raw.get('proto', 'tcp') != 'udp':
                problems.append('forwards[%d]: %s is for UDP forwards (a TCP forward is checked by connecting)' % (index, key))
        if raw.get('expect') and _match.problem(raw['expect']):
            problems.append('forwards[%d]: expect %r %s' % (index, raw['expect'], _match.problem(raw['expect'])))
    if problems:
        module.fail_json(msg='invalid parameters: %s' % '; '.join(problems), errors=problems)


def _read_saved(view, path):
    for family, fam in view.families.items():
        fam.saved_path = '%s.v%d' % (path, family)
        try:
            with open(fam.saved_path) as handle:
                fam.saved_text = handle.read()
        except FileNotFoundError:
            fam.saved_text = None
        except OSError as exc:
            fam.saved_text = '# unreadable: %s\n' % exc


def _run(module):
    params = module.params
    _check_params(module)
    view = _doctor.View(prefix=params['chain_prefix'])
    _read_host(module, view)
    complete, unresolved = _resolve(module, view, params['forwards'])
    forwards, warnings = _routes.with_hairpin_networks(module, _parse(module, complete), view.interfaces)
    for warning in warnings:
        module.warn(warning)
    view.desired = {family: _rules.desired_state(forwards, family, view.prefix) for family in _forward.FAMILIES}
    selected = [fwd for fwd in forwards if _selected(module, fwd)]
    unresolved = [item for item in unresolved if not params['guest'] or item['guest'] == params['guest']]
    if not selected and not unresolved:
        module.exit_json(changed=False, forwards=[], broken=[], table=[], matched=False,
                         msg='no declared forward of this host matches%s%s (declared: %s)' % (
                             ' guest=%s' % params['guest'] if params['guest'] else '',
                             ' port=%s' % params['port'] if params['port'] else '',
                             ', '.join(f.label for f in forwards) or 'none'))
    # the route back to each allow-listed source (rp_filter); guests are found on the connected networks
    for fwd in selected:
        for net in fwd.sources:
            address = _forward.address_text(net.network_address)
            if address not in view.routes:
                view.routes[address] = (_routes.route_get(module, address, net.version) or {}).get('dev')
    hits = [item for item in _listeners.read_listeners() if any(_listeners.covers(item, fwd) for fwd in selected)]
    view.listeners = _listeners.name_processes(hits) if hits else []
    _answers(module, view, selected, params['forwards'])
    if params['probe']:
        _probe(module, view, selected)
    results = [_doctor.diagnose(fwd, view) for fwd in selected] + unresolved
    module.exit_json(changed=False, matched=True, forwards=results, broken=[r['label'] for r in results if r['verdict'] != 'ok'],
                     table=_doctor.table(results),
                     host={'flavour': {'ipv%d' % f: fam.flavour for f, fam in view.families.items()},
                           'public_ip': params['public_ip'] or '',
                           'libvirt': 'read' if view.libvirt is not None else view.libvirt_error,
                           'nftables': 'read' if view.nft is not None else view.nft_error})


def run(module):
    """Everything the module does; a command that fails ends it naming the command and its stderr."""
    try:
        _run(module)
    except _command.CommandError as exc:
        module.fail_json(msg=str(exc), cmd=exc.cmd, rc=exc.rc, stderr=exc.stderr)
    except (_routes.RouteError, RulesetError) as exc:
        module.fail_json(msg=str(exc))


def main():
    run(AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True))


if __name__ == '__main__':
    main()
