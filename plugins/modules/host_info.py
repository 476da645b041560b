#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: host_info
short_description: What else manages the firewall of a hypervisor
version_added: 1.0.0
description:
  - Read-only. Reports what the role M(kvmnet.nat.expose) must know before it changes anything,
    namely whether ufw is installed and enabled, whether firewalld is installed and running, whether
    netfilter-persistent (iptables-persistent) is installed, whether libvirt filters with its
    nftables backend (a C(libvirt_network) table that rejects), and which packages apt would remove
    to install the packages in O(simulate_install) (C(apt-get -s), nothing is installed).
author:
  - kvmnet.nat maintainers (!UNKNOWN)
attributes:
  check_mode:
    support: full
    description: The module only reads.
  diff_mode:
    support: none
    description: Nothing changes.
  platform:
    platforms: posix
    support: full
    description: Debian-family hosts (C(dpkg-query), C(apt-get), C(systemctl), C(ip), C(nft) where installed).
options:
  simulate_install:
    description:
      - Packages whose installation apt simulates (only those not installed), to report what it would remove.
    type: list
    elements: str
    default: []
  paths:
    description:
      - Files (or directories) to look at, by a name of the caller's choosing; RV(files) says whether each
        exists and, for a regular file, its SHA-256.
    type: dict
    default: {}
  units:
    description: systemd units whose C(systemctl is-enabled) and C(is-active) states RV(units) reports.
    type: list
    elements: str
    default: []
  backend:
    description:
      - The O(kvmnet.nat.forwards#module:backend) the role will ask for; RV(backend) says which backend it gets
        here and why, decided exactly as M(kvmnet.nat.forwards) decides it.
    type: str
    choices: [auto, iptables, nftables]
    default: auto
    version_added: 1.2.0
  chain_prefix:
    description: The O(kvmnet.nat.forwards#module:chain_prefix), which names the nftables table of the collection.
    type: str
    default: KVMNAT
    version_added: 1.2.0
notes:
  - "Debian's ufw declares C(Breaks: iptables-persistent, netfilter-persistent): installing
    iptables-persistent on a host with ufw removes ufw. The simulation shows that before it happens."
"""

EXAMPLES = r"""
- name: Read the host's firewall managers
  kvmnet.nat.host_info:
    simulate_install: [iptables-persistent]
  register: host

- name: Never remove a package
  ansible.builtin.assert:
    that: host.install.would_remove | length == 0
"""

RETURN = r"""
packages:
  description: Whether each watched package is installed.
  returned: always
  type: dict
  sample: {ufw: true, firewalld: false, iptables-persistent: false, netfilter-persistent: false, nftables: true}
ufw:
  description: ufw installed, and enabled in C(/etc/ufw/ufw.conf).
  returned: always
  type: dict
  sample: {installed: true, enabled: true}
firewalld:
  description: firewalld installed, and active.
  returned: always
  type: dict
  sample: {installed: false, active: false}
netfilter_persistent:
  description: netfilter-persistent installed.
  returned: always
  type: dict
  sample: {installed: false}
libvirt_nftables:
  description: Per family, whether libvirt's nftables table C(libvirt_network) exists and rejects.
  returned: always
  type: dict
  sample: {ipv4: false, ipv6: false}
backend:
  description: The backend O(backend) gives on this host (see O(kvmnet.nat.forwards#module:backend)), why, the backend
    libvirt's loaded rules show, and C(problem), why that backend cannot work here (V(nftables) beside libvirt's
    iptables rules), or null.
  returned: always
  type: dict
  version_added: 1.2.0
  sample: {name: nftables, requested: auto, libvirt: nftables, problem: null,
           reason: "libvirt's network driver uses its nftables firewall backend here (table ip libvirt_network is loaded)"}
forward_drops:
  description:
    - The base chains on the forward hook of other nftables tables (an admin's C(table inet filter), or
      iptables-nft's C(FORWARD)) whose policy is drop and which hold no accept by conntrack mark. A drop in
      another table cannot be overridden from the collection's table; C(fix) is the rule that lets the
      forwarded connections of the nftables backend through.
  returned: always
  type: list
  elements: dict
  version_added: 1.2.0
  sample:
    - {table: inet filter, chain: forward, iptables: false,
       fix: "nft insert rule inet filter forward ct mark and 0x00200000 == 0x00200000 accept"}
files:
  description: For each name in O(paths), whether it exists and the SHA-256 of a regular file (else null).
  returned: always
  type: dict
  sample: {plugin: {exists: true, sha256: 5e1f...}, unit: {exists: false, sha256: null}}
units:
  description: For each unit in O(units), what C(systemctl is-enabled) and C(systemctl is-active) say.
  returned: always
  type: dict
  sample: {kvmnet-nat.service: {enabled: enabled, active: inactive}, libvirtd.service: {enabled: enabled, active: active}}
forwarding:
  description: The live forwarding settings, as the kernel shows them (null when unknown).
  returned: always
  type: dict
  sample: {ipv4: "1", ipv6: "0"}
default_ipv4:
  description: The address of the default IPv4 route (what Ansible's C(default_ipv4.address) fact gives), or empty.
  returned: always
  type: str
  sample: 203.0.113.10
install:
  description: The simulated installation of O(simulate_install).
  returned: always
  type: dict
  sample: {packages: [iptables-persistent], would_remove: [ufw], error: ""}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kvmnet.nat.plugins.module_utils import _backends
from ansible_collections.kvmnet.nat.plugins.module_utils import _host
from ansible_collections.kvmnet.nat.plugins.module_utils._schema import DEFAULT_PREFIX
from ansible_collections.kvmnet.nat.plugins.module_utils.nftables import backend as _nftables


def _backend_facts(module):
    """The ``backend`` and ``forward_drops`` facts, from the ruleset _host.read reads anyway."""
    params = module.params
    try:
        own = _nftables.Engine(module, params['chain_prefix']).table()
    except ValueError as exc:
        module.fail_json(msg='invalid parameters: %s' % exc)

    def facts(ruleset):
        objects = ruleset.get('nftables', []) if isinstance(ruleset, dict) else None
        choice = _backends.choose(params['backend'], objects, _backends.read_conf(), own)
        problem = _backends.mismatch(choice)
        if objects is None and params['backend'] == 'auto' and module.get_bin_path('nft'):
            # as kvmnet.nat.forwards refuses it: without the ruleset, auto could pick the wrong backend
            problem = ('backend: auto cannot tell which firewall libvirt uses: nft is installed but '
                       '"nft -j list ruleset" gave no ruleset; set expose_backend, or mend nft')
        return {'backend': dict(choice.result(), problem=problem),
                'forward_drops': _backends.forward_drops(ruleset, own)}
    return facts


def main():
    module = AnsibleModule(argument_spec=dict(simulate_install=dict(type='list', elements='str', default=[]),
                                              paths=dict(type='dict', default={}),
                                              units=dict(type='list', elements='str', default=[]),
                                              backend=dict(type='str', choices=list(_backends.BACKENDS), default='auto'),
                                              chain_prefix=dict(type='str', default=DEFAULT_PREFIX)),
                           supports_check_mode=True)
    params = module.params
    module.exit_json(changed=False, **_host.read(module, params['simulate_install'], params['paths'], params['units'],
                                                 _backend_facts(module)))


if __name__ == '__main__':
    main()
