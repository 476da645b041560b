#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: forwards
short_description: Expose libvirt/KVM guest ports through DNAT, declaratively
version_added: 1.0.0
description:
  - Brings the iptables chains owned by this module to exactly the given set of port
    forwards, in one C(iptables-restore --noflush) transaction per IP family.
  - All rules live in chains named C(<chain_prefix>_DNAT) and C(<chain_prefix>_SNAT) (table
    C(nat)) and C(<chain_prefix>_FWD) (table C(filter)). Each built-in chain that leads to them
    (nat C(PREROUTING), nat C(OUTPUT) for local destinations, nat C(POSTROUTING), filter
    C(FORWARD)) gets exactly one jump, at position 1. Every run checks the position, not
    just the presence, and moves the jump back to the top if anything was inserted above it.
  - For each forward it writes a DNAT scoped to the public address and/or inbound interface,
    a FORWARD accept that only matches connections this very forward DNATed (so nothing
    else becomes reachable, and libvirt's REJECT rules below stay in force for everything
    else), and the MASQUERADE the chosen O(forwards[].masquerade) mode needs.
  - Rules, chains and jumps that the module does not own (libvirt's, Docker's, the
    admin's) are never flushed, deleted or reordered. The C(INPUT) chains are never touched.
  - Invalid input is refused before anything changes, and every error names the guest and
    the port. A payload is always checked with C(iptables-restore --test) before it is applied.
  - Uses the iptables flavour (nf_tables or legacy) the host's rules are in; refuses a host
    whose rules are split across both.
  - "With O(backend=nftables) (or V(auto) on a host whose libvirt uses its nftables firewall backend),
    the rules live instead in one nftables table of the module's own, C(table inet kvmnet_nat)
    (named from O(chain_prefix)), replaced as a whole in one C(nft -f) transaction checked with
    C(nft -c) first, plus one rule of the module's own, C(ct mark & 0x00200000 == 0x00200000 accept)
    with the comment C(kvmnet.nat: accept), at the top of libvirt's C(forward) chain of C(table ip
    libvirt_network) and C(table ip6 libvirt_network) where those exist. No other table is touched."
  - Whichever backend is used, the rules, chains, table, accept rule and saved files of the other one
    are removed in the same run, after the new rules are in place, so that changing O(backend) moves
    every forward and leaves nothing of the old backend behind.
extends_documentation_fragment:
  - kvmnet.nat.forward
author:
  - kvmnet.nat maintainers (!UNKNOWN)
attributes:
  check_mode:
    support: full
    description: Reads the ruleset, reports what would change, writes nothing.
  diff_mode:
    support: full
    description: Returns the managed rules before and after, one rule per line.
  idempotent:
    support: full
    description: An unchanged set of forwards reports C(changed=false) and writes nothing.
  platform:
    platforms: posix
    support: full
    description: Linux with iptables (nf_tables or legacy), ip6tables for IPv6 forwards; or nft (nftables 1.0 or later).
options:
  backend:
    description:
      - The firewall the rules are written in.
      - V(auto) follows libvirt's network driver, whose reject rules the forwards must pass and can only pass
        in the same firewall. The first of these that applies decides. 1. libvirt's nftables table C(table ip
        libvirt_network) (or C(ip6)) is loaded, V(nftables). 2. libvirt's iptables chains (C(LIBVIRT_FWI),
        C(LIBVIRT_FWO), C(LIBVIRT_FWX), C(LIBVIRT_PRT) and the like) are loaded, V(iptables). 3. No libvirt
        network is active, the C(firewall_backend) that C(/etc/libvirt/network.conf) sets. 4. The module's
        own nftables table is loaded (an earlier run chose nftables), V(nftables). 5. Otherwise V(iptables),
        which Debian's and Ubuntu's libvirt packages use. RV(backend) returns the choice and its reason, in
        check mode too.
      - V(nftables) is refused on a host where libvirt's iptables chains are loaded (their C(REJECT) in
        C(FORWARD) would refuse every forwarded connection), before anything changes.
    type: str
    choices: [auto, iptables, nftables]
    default: auto
    version_added: 1.2.0
  forwards:
    description:
      - The complete list of forwards for this host. Forwards that are not listed any more are
        removed.
      - An empty list removes all managed rules, like O(state=absent).
    type: list
    elements: dict
    default: []
    suboptions:
      guest:
        description:
          - Name of the guest (libvirt domain); used in errors and rule comments.
          - 1 to 64 characters of letters, digits and C(._+:@-).
        type: str
        required: true
      guest_ip:
        description:
          - Address of the guest. An IPv6 address makes this an IPv6 forward (handled with ip6tables).
        type: str
        required: true
      proto:
        description:
          - Protocol, one of C(tcp), C(udp), C(sctp).
        type: str
        default: tcp
      host_port:
        description:
          - Port or range (V(10000-10009)) on the public side.
        type: raw
        required: true
      guest_port:
        description:
          - Port or range on the guest; a range must have as many ports as O(forwards[].host_port),
            and is mapped one to one (host_port's first port to guest_port's first port).
          - Defaults to O(forwards[].host_port).
        type: raw
      sources:
        description:
          - Allow-list of source addresses or CIDRs; empty means any source.
        type: list
        elements: str
        default: []
      masquerade:
        description:
          - V(auto) masquerades only hairpin traffic (a client inside the guest's own network
            reaching the public address), so outside clients keep their address as the guest sees it.
          - V(always) masquerades all traffic of this forward to the guest, for guests whose
            route back does not go through this host. The guest then sees the host's address.
          - V(never) adds no MASQUERADE at all.
          - Never an unscoped MASQUERADE; each rule matches only connections of this forward.
        type: str
        default: auto
      public_ip:
        description:
          - Overrides O(public_ip) (or O(public_ip6)) for this forward.
        type: str
      in_interface:
        description:
          - Overrides O(in_interface) for this forward.
        type: str
      guest_network:
        description:
          - The guest's network (CIDR), used to scope the hairpin MASQUERADE of O(forwards[].masquerade=auto).
          - Found from the host's connected routes when omitted; if the guest is not on a connected
            network, no hairpin rule is written and a warning says so.
        type: str
      allow_in_use:
        description:
          - Forward this host port even though a process on the host listens on it (on the public
            address, on every address, or on any address when only O(in_interface) scopes the forward).
          - That process then no longer receives traffic for this port from outside. Without this
            option such a forward is refused before anything changes (see O(check_listeners)).
        type: bool
        default: false
  check_listeners:
    description:
      - Refuse, before any change, a forward whose host port a local process already listens on
        (read from C(/proc/net)), naming the process, unless the forward sets O(forwards[].allow_in_use).
    type: bool
    default: true
  vip_addresses:
    description:
      - Addresses that may be a public address (O(public_ip), O(public_ip6), O(forwards[].public_ip))
        although they are not (yet) an address of this host, such as a failover address (VIP) that
        moves between hosts.
      - Any other public address that is not one of this host's own is refused before anything changes;
        its forwards would take traffic routed through this host to another machine's service.
    type: list
    elements: str
    default: []
    version_added: 1.1.0
  state:
    description:
      - V(present) makes the managed rules equal to O(forwards).
      - V(absent) removes every rule, jump and chain the module owns, and the persisted files.
    type: str
    choices: [present, absent]
    default: present
  persist_path:
    description:
      - Also write the managed rules, and nothing else, as restore files C(<persist_path>.v4) and
        C(<persist_path>.v6) for C(kvmnet-nat-restore) (role M(kvmnet.nat.expose)) to apply at boot.
      - Must be an absolute file name in an existing directory; C(<persist_path>.v4) and C(.v6) must
        be regular files or not exist. This is checked before anything changes.
      - Each file is written through a new temporary file with a random name in the same directory
        and renamed into place, with mode C(0640). Its header names the iptables flavour the rules were
        applied with and the SHA-256 of the rest, so a file cut short or edited is refused as a whole.
      - The files are written before the rules are applied, so that they never describe other rules than
        the live ones (C(kvmnet-nat-restore) would bring a removed forward back). When a file cannot be
        written (for example a read-only directory), the task fails and no rule is applied; when a
        payload fails after the files were written, they are put back as they were.
      - The files are removed with O(state=absent).
    type: path
  lock_timeout:
    description:
      - Seconds to wait for the host-wide lock (see O(lock_path)) and for the xtables lock of
        C(iptables-restore); 1 to 600.
    type: int
    default: 10
  return_details:
    description:
      - Return RV(rules) (every managed rule after the run) and RV(forwards) (the validated forwards).
      - With V(false) both come back empty; RV(reasons), RV(flavour), C(changed) and the diff are
        unchanged. At 100 forwards the two are about 100 KB per host, which the controller parses and
        passes through every callback; the role C(kvmnet.nat.expose) sets V(false).
      - With V(false) Ansible's echo of the arguments (C(invocation), which ansible-core before 2.21 always
        asks for and 2.21 only with its C(INJECT_INVOCATION) setting) leaves out O(forwards) as well. The
        controller has them, and scanning and encoding them again costs the module about 0.3 s at 10 000
        forwards.
    type: bool
    default: true
    version_added: 1.1.0
  lock_path:
    description:
      - The host-wide lock every kvmnet.nat writer takes for reading, planning and applying (this
        module, and C(kvmnet-nat-restore) from the libvirt hook and at boot), so two runs never
        interleave. When it is not free within O(lock_timeout), the module fails and changes nothing.
      - It must be a regular file with a single link, or not exist (it is then created). A symlink, a
        FIFO, a directory, a socket or device, or a hard-linked file is refused before anything is read,
        here and by C(kvmnet-nat-restore) alike.
      - In check mode the lock is taken only when the file exists (opened read-only); check mode never
        creates or writes it.
    type: path
    default: /run/kvmnet-nat.lock
notes:
  - Packets of an established connection DNATed into a guest network are accepted by one rule
    per guest network (per guest when its network is not known) at the top of C(<prefix>_FWD), so
    the per-packet cost does not grow with the number of forwards or guests.
  - With more than 8 rules of a protocol in a chain, the rules go into a binary tree of sub-chains
    C(<prefix>_DNAT_<n>), C(<prefix>_FWD_<n>) and C(<prefix>_SNAT_<n>), split by host port, so a
    new connection is tested against about 2*log2(N/8)+8 rules instead of N. The sub-chains are
    owned like the others, and created, rewritten and removed in the same transaction.
  - C(iptables-restore) commits table by table. The payload is therefore tested with C(--test) first,
    and the result is read back and compared after applying.
  - Every address and port in a payload is re-rendered from its parsed value (zone ids C(%...),
    IPv4-mapped IPv6 addresses and non-ASCII digits are refused), and before any payload reaches
    C(iptables-restore) each of its lines is checked against the grammar of the rules the module writes.
  - A forward whose O(forwards[].guest_ip) is an address of this host, or the network or broadcast
    address of a connected network, is refused, as are public addresses that are loopback, unspecified,
    multicast, broadcast or link-local. A public address that is not one of this host's is refused
    unless it is listed in O(vip_addresses) (a failover address that moves between hosts).
  - A rule in a built-in chain that jumps into the module's chains but is not the module's own jump
    is refused, naming the rule; it is never deleted.
seealso:
  - name: iptables-restore(8)
    description: The restore format the module writes.
    link: https://manpages.debian.org/bookworm/iptables/iptables-restore.8.en.html
"""

EXAMPLES = r"""
- name: Expose guests on the hypervisor's public address
  kvmnet.nat.forwards:
    public_ip: 203.0.113.10
    forwards:
      - {guest: web01, guest_ip: 192.168.122.10, proto: tcp, host_port: 8080, guest_port: 80}
      - {guest: web01, guest_ip: 192.168.122.10, host_port: 2222, guest_port: 22, sources: [198.51.100.0/24]}
      - {guest: dns01, guest_ip: 192.168.122.11, proto: udp, host_port: 5353, guest_port: 53}
      - {guest: app01, guest_ip: 192.168.122.12, host_port: "10000-10009", guest_port: "20000-20009"}
      - {guest: app02, guest_ip: 192.168.122.13, host_port: 8443, guest_port: 443, masquerade: always}

- name: Remove every rule, chain and jump the module owns
  kvmnet.nat.forwards:
    state: absent
"""

RETURN = r"""
rules:
  description: The managed rules after the run, one line each, per scope of the backend used (C(ipv4) and
    C(ipv6) for iptables, as C(table chain rule); C(inet) for the nftables table).
  returned: always; empty when O(return_details=false)
  type: dict
  sample:
    ipv4:
      - nat PREROUTING[1] -m comment --comment "kvmnet.nat: jump" -j KVMNAT_DNAT
      - nat :KVMNAT_DNAT
      - >-
        nat KVMNAT_DNAT -d 203.0.113.10/32 -p tcp -m tcp --dport 8080 -m comment
        --comment "kvmnet.nat: web01 tcp/8080->80" -j DNAT --to-destination 192.168.122.10:80
    ipv6: []
reasons:
  description: Why the module changed (or would change) something, one line per change.
  returned: always
  type: list
  elements: str
  sample: ["filter FORWARD: jump was at position 2, moved back to 1"]
flavour:
  description: The flavour used per scope of the backend used, V(nft) or V(legacy) for the iptables families
    C(ipv4) and C(ipv6), V(nftables) for the nftables table (C(inet)).
  returned: always
  type: dict
  sample: {ipv4: nft, ipv6: nft}
backend:
  description: The backend used and why (see O(backend)).
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
      description: The firewall backend libvirt's loaded rules show (V(iptables), V(nftables)), or null when
        no libvirt network is active.
      type: str
  sample: {name: nftables, requested: auto, libvirt: nftables,
           reason: "libvirt's network driver uses its nftables firewall backend here (table ip libvirt_network is loaded)"}
forwards:
  description: The validated forwards, in the order the rules are written.
  returned: always; empty when O(return_details=false)
  type: list
  elements: dict
  sample:
    - {guest: web01, guest_ip: 192.168.122.10, proto: tcp, host_port: "8080", guest_port: "80",
       public_ip: 203.0.113.10, in_interface: null, sources: [], masquerade: auto,
       guest_network: 192.168.122.0/24}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kvmnet.nat.plugins.module_utils import _backends
from ansible_collections.kvmnet.nat.plugins.module_utils import _converge
from ansible_collections.kvmnet.nat.plugins.module_utils import _forward
from ansible_collections.kvmnet.nat.plugins.module_utils import _listeners
from ansible_collections.kvmnet.nat.plugins.module_utils import _lock
from ansible_collections.kvmnet.nat.plugins.module_utils import _routes
from ansible_collections.kvmnet.nat.plugins.module_utils import _schema
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables import backend as _iptables
from ansible_collections.kvmnet.nat.plugins.module_utils.nftables import backend as _nftables


def argument_spec():
    return dict(
        forwards=dict(type='list', elements='dict', default=[], options=_schema.forward_options()),
        check_listeners=dict(type='bool', default=True),
        vip_addresses=dict(type='list', elements='str', default=[]),
        state=dict(type='str', choices=['present', 'absent'], default='present'),
        lock_timeout=dict(type='int', default=10),
        lock_path=dict(type='path', default=_lock.DEFAULT_PATH),
        return_details=dict(type='bool', default=True),
        backend=dict(type='str', choices=list(_backends.BACKENDS), default='auto'),
        **_schema.scope_options()
    )


def _parse(module):
    params = module.params
    try:
        return _forward.parse_forwards(params['forwards'] if params['state'] == 'present' else [],
                                       params['public_ip'], params['public_ip6'], params['in_interface'])
    except _forward.ForwardError as exc:
        module.fail_json(msg='invalid forwards, nothing was changed: %s' % exc, errors=exc.errors)


def _check_host(module, forwards):
    """What the host says about the forwards, before anything changes: guest addresses that are the
    host's own (or a network's network/broadcast address), public addresses that are not (and are no
    listed VIP), and ports a host process listens on."""
    if not forwards:
        return forwards
    try:
        interfaces = _routes.host_interfaces(module)
    except _routes.RouteError as exc:
        module.fail_json(msg='%s; nothing was changed' % exc)
    forwards, warnings = _routes.with_hairpin_networks(module, forwards, interfaces)
    for warning in warnings:
        module.warn(warning)
    vips, errors = _forward.parse_vip_addresses(module.params.get('vip_addresses'))
    problems, warnings = _forward.host_address_problems(forwards, interfaces, vips)
    errors.extend(problems)
    for fwd in forwards:
        problem = _forward.target_problem(fwd.guest_ip, fwd.guest_network)
        if problem:
            errors.append('forward %s: %s' % (fwd.label, problem))
    if errors:
        module.fail_json(msg='forwards to this host itself or to addresses not its own, nothing was changed: %s'
                         % '; '.join(errors), errors=errors)
    for warning in warnings:
        module.warn(warning)
    if module.params['check_listeners']:
        taken = _listeners.conflicts(forwards, _listeners.read_listeners())
        if taken:
            module.fail_json(msg='host ports in use, nothing was changed: %s' % '; '.join(taken), errors=taken)
    return forwards


def _run(module):
    params = module.params
    engines = {'iptables': _iptables.Engine(module, params['chain_prefix'], params['lock_timeout']),
               'nftables': _nftables.Engine(module, params['chain_prefix'])}
    # the backend is chosen under the host lock, before anything is read (_converge.converge)
    engine = _backends.Switch(module, engines, params['backend'])
    paths = _converge.check_params(module, engine)
    _converge.converge(module, engine, _check_host(module, _parse(module)), paths)


def run(module):
    """Everything the module does (plugins/module_utils/_converge.py), refusals turned into failures."""
    _converge.run(module, _run)


def main():
    run(AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True))


if __name__ == '__main__':
    main()
