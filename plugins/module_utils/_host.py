# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""What else manages the firewall of a hypervisor, read before anything changes: PRIVATE.

The parsers are pure (unit-tested on recorded output); ``read`` runs the read-only commands
(``dpkg-query``, ``systemctl is-active``, ``nft list table``, ``apt-get -s``) through _command.run.
"""

from __future__ import annotations

import hashlib
import json
import os

from ansible_collections.kvmnet.nat.plugins.module_utils import _routes
from ansible_collections.kvmnet.nat.plugins.module_utils._command import run
WATCHED = ('ufw', 'firewalld', 'iptables-persistent', 'netfilter-persistent', 'nftables')


def parse_dpkg(text):
    """``dpkg-query -W -f '${Package}\\t${Status}\\n'`` -> {package: installed?}."""
    result = {}
    for line in text.splitlines():
        name, _sep, status = line.partition('\t')
        if name:
            result[name.strip()] = status.strip().endswith(' installed') and status.strip().startswith('install ')
    return result


def parse_apt_simulation(text):
    """Packages ``apt-get -s install ...`` would remove (its ``Remv NAME [...]`` lines)."""
    return sorted({line.split()[1] for line in text.splitlines() if line.startswith('Remv ') and len(line.split()) > 1})


def ufw_enabled(conf_text):
    """ufw's ``/etc/ufw/ufw.conf`` says ENABLED=yes."""
    for line in conf_text.splitlines():
        key, _sep, value = line.strip().partition('=')
        if key.strip() == 'ENABLED':
            return value.strip().strip('"\'').lower() == 'yes'
    return False


def nft_rejects(text):
    """An nftables table listing with a reject statement (libvirt's nftables backend rejects there)."""
    return any(word == 'reject' for line in text.splitlines() for word in line.split())


def default_ipv4(routes_text, interfaces):
    """The address of the default IPv4 route, as Ansible's ``default_ipv4.address`` gives it: the
    route's ``prefsrc``, or the first address of its device. ``routes_text``: ``ip -j -4 route show
    default``; ``interfaces``: ``[(ip_interface, device)]``."""
    try:
        routes = json.loads(routes_text or '[]')
    except ValueError:
        return ''
    for route in routes if isinstance(routes, list) else []:
        if not isinstance(route, dict):
            continue
        if route.get('prefsrc'):
            return route['prefsrc']
        for iface, dev in interfaces:
            if dev == route.get('dev') and iface.version == 4:
                return str(iface.ip)
    return ''


def file_state(path):
    """{exists, sha256} of a path (sha256 of a regular file, else None)."""
    if not os.path.lexists(path):
        return {'exists': False, 'sha256': None}
    if os.path.islink(path) or not os.path.isfile(path):
        return {'exists': True, 'sha256': None}
    digest = hashlib.sha256()
    with open(path, 'rb') as handle:
        for chunk in iter(lambda: handle.read(65536), b''):
            digest.update(chunk)
    return {'exists': True, 'sha256': digest.hexdigest()}


def read_sysctl(path):
    """A /proc/sys value, stripped; None when it cannot be read."""
    try:
        with open(path) as handle:
            return handle.read().strip()
    except OSError:
        return None


def _run(module, cmd):
    return run(module, cmd, check=False)


def process_running(name, proc='/proc'):
    for pid in filter(str.isdigit, os.listdir(proc)):
        try:
            with open(os.path.join(proc, pid, 'comm')) as handle:
                if handle.read().strip() == name:
                    return True
        except OSError:
            continue
    return False


def read(module, simulate_install=(), paths=None, units=()):
    """The facts the role decides on, from read-only commands; ``paths``: {name: path} to look at;
    ``units``: systemd units whose enablement to report."""
    facts = {'packages': {name: False for name in WATCHED},
             'files': {name: file_state(path) for name, path in (paths or {}).items()},
             'forwarding': {'ipv4': read_sysctl('/proc/sys/net/ipv4/ip_forward'),
                            'ipv6': read_sysctl('/proc/sys/net/ipv6/conf/all/forwarding')}}
    ip_cmd = module.get_bin_path('ip')
    facts['default_ipv4'] = ''
    if ip_cmd:
        rc, out, _err = _run(module, [ip_cmd, '-j', '-4', 'route', 'show', 'default'])
        if rc == 0:
            facts['default_ipv4'] = default_ipv4(out, _routes.host_interfaces(module))
    dpkg = module.get_bin_path('dpkg-query')
    if dpkg:
        _rc, out, _err = _run(module, [dpkg, '-W', '-f', '${Package}\t${Status}\n'] + list(WATCHED))
        facts['packages'].update({k: v for k, v in parse_dpkg(out).items() if k in WATCHED})
    systemctl = module.get_bin_path('systemctl')
    if systemctl:
        _rc, out, _err = _run(module, [systemctl, 'is-active', 'firewalld.service'])
        firewalld_active = out.strip() == 'active'
    else:
        firewalld_active = process_running('firewalld')
    facts['firewalld'] = {'installed': facts['packages']['firewalld'], 'active': firewalld_active}
    facts['units'] = {}
    for unit in units:
        state = {'enabled': 'unknown', 'active': 'unknown'}
        if systemctl:
            for key in state:
                _rc, out, _err = _run(module, [systemctl, 'is-%s' % key, unit])
                state[key] = out.strip() or 'unknown'
        facts['units'][unit] = state
    conf = ''
    try:
        with open('/etc/ufw/ufw.conf') as handle:
            conf = handle.read()
    except OSError:
        pass
    facts['ufw'] = {'installed': facts['packages']['ufw'], 'enabled': facts['packages']['ufw'] and ufw_enabled(conf)}
    facts['netfilter_persistent'] = {'installed': facts['packages']['netfilter-persistent']}
    facts['libvirt_nftables'] = {}
    nft = module.get_bin_path('nft')
    for family in ('ip', 'ip6'):
        rejects = False
        if nft:
            rc, out, _err = _run(module, [nft, 'list', 'table', family, 'libvirt_network'])
            rejects = rc == 0 and nft_rejects(out)
        facts['libvirt_nftables']['ipv4' if family == 'ip' else 'ipv6'] = rejects
    wanted = [name for name in simulate_install if not facts['packages'].get(name)]
    facts['install'] = {'packages': wanted, 'would_remove': [], 'error': ''}
    apt = module.get_bin_path('apt-get')
    if wanted and apt:
        rc, out, err = _run(module, [apt, '-s', '-q', '-o', 'Debug::NoLocking=true', 'install',
                                     '--no-install-recommends'] + wanted)
        facts['install']['would_remove'] = parse_apt_simulation(out)
        if rc != 0:
            facts['install']['error'] = (err or out).strip().splitlines()[-1] if (err or out).strip() else 'rc=%d' % rc
    elif wanted:
        facts['install']['error'] = 'apt-get not found'
    return facts
