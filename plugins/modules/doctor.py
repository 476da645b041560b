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
  - C(layout) the backend (O(backend)) and, with iptables, its flavour (rules in both legacy and nf_tables),
    firewalld running, nftables tables other than iptables-nft's own that drop or reject on the forward or
    prerouting hook (libvirt's nftables backend), Docker's FORWARD policy DROP (reported); with nftables,
    whether libvirt's iptables rules are loaded beside it (then it cannot work).
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
  - On a host with the nftables backend (O(backend)), the same checks read C(nft -j list ruleset). C(jumps) is
    the collection's C(table inet kvmnet_nat) base chains (C(prerouting), C(output), C(postrouting)) and its
    accept rule C(ct mark & 0x00200000 == 0x00200000 accept), once and first, in libvirt's C(forward) chain
    (C(table ip libvirt_network), C(ip6)). C(rules) walks each packet through every table's base chains on
    each hook in priority order (ours with its dispatch maps, libvirt's, an admin's), as the kernel runs
    them - an accept in one base chain does not stop another table's drop, a drop anywhere ends it - so an
    admin's drop for one guest is named on that guest's forwards only, and a C(policy drop) on the forward
    hook (an admin's C(table inet filter)) is named with the rule to add at the top of that chain, C(nft
    insert rule inet filter forward ct mark & 0x00200000 == 0x00200000 accept). Matches it does not
    evaluate (C(meta mark), C(limit), ...) make the verdict V(unknown), naming the rule. C(saved) reads
    C(<persist_path>.nft). The dispatch keeps no packet counter, so C(counters) shows the accept rule's, and
    O(probe) says whether the walk's DNAT took the connection and the guest answered.
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
    description: Linux with iptables or nft (O(backend)); libvirt (C(virsh)) and C(nft) are used when present.
options:
  backend:
    description:
      - The firewall backend whose rules are diagnosed, as in M(kvmnet.nat.forwards) (the same V(auto)
        choice - libvirt's loaded firewall, then C(/etc/libvirt/network.conf), then the module's own
        nftables table, else V(iptables)). RV(backend) says which and why.
    type: str
    choices: [auto, iptables, nftables]
    default: auto
    version_added: 1.2.0
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
      - Base name of the saved rules (C(<persist_path>.v4), C(.v6); with the nftables backend
        C(<persist_path>.nft)) to compare; not checked when omitted.
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
backend:
  description: The backend diagnosed and why (see O(backend)).
  returned: always
  type: dict
  version_added: 1.2.0
  contains:
    name:
      description: V(iptables) or V(nftables).
      type: str
    requested:
      description: The value of O(backend).
      type: str
    reason:
      description: Why this backend, in one sentence.
      type: str
    libvirt:
      description: The firewall backend libvirt's loaded rules show (V(iptables), V(nftables)), or null.
      type: str
  sample: {name: nftables, requested: auto, libvirt: nftables,
           reason: "libvirt's network driver uses its nftables firewall backend here (table ip libvirt_network is loaded)"}
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
      description: iptables flavour per family (V(nftables) for both with the nftables backend).
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

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kvmnet.nat.plugins.module_utils import _backends
from ansible_collections.kvmnet.nat.plugins.module_utils import _doctor_run
from ansible_collections.kvmnet.nat.plugins.module_utils import _schema
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables import backend as _iptables
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables import diagnose as _diagnose
from ansible_collections.kvmnet.nat.plugins.module_utils.nftables import backend as _nftables
from ansible_collections.kvmnet.nat.plugins.module_utils.nftables import diagnose as _nft_diagnose


def argument_spec():
    return dict(
        forwards=dict(type='list', elements='dict', required=True,
                      options=dict(_schema.forward_options(guest_ip_required=False), **_schema.DIAGNOSE_OPTIONS)),
        uri=dict(type='str', default='qemu:///system'),
        guest=dict(type='str'),
        port=dict(type='int'),
        probe=dict(type='bool', default=False),
        timeout=dict(type='float', default=2.0),
        backend=dict(type='str', choices=list(_backends.BACKENDS), default='auto'),
        **_schema.scope_options()
    )


def run(module):
    """Everything the module does (plugins/module_utils/_doctor_run.py), with the diagnosis of each backend;
    the run chooses one as kvmnet.nat.forwards does (_backends), once the parameters are checked. The doctor
    takes no lock and applies nothing: the iptables engine's lock timeout is never used."""
    prefix = module.params['chain_prefix']
    _doctor_run.run(module, {'iptables': _diagnose.Diagnosis(_iptables.Engine(module, prefix, lock_timeout=0)),
                             'nftables': _nft_diagnose.Diagnosis(_nftables.Engine(module, prefix))})


def main():
    run(AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True))


if __name__ == '__main__':
    main()
