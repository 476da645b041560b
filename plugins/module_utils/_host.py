# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The one reader of a hypervisor's facts, for the role's checks (host_info) and the doctor alike: PRIVATE.

One function per fact. The parsers are pure (unit-tested on recorded output); the readers run
read-only commands through _command.run and never change anything:

- packages, install       ``dpkg-query -W``; ``apt-get -s install`` (what apt would remove)
- firewalld_active, unit_states ``systemctl is-active`` / ``is-enabled`` (or /proc without systemd)
- ufw                     ``/etc/ufw/ufw.conf``
- sysctls, forwarding     /proc/sys: forwarding, rp_filter, bridge-nf-call-iptables
- defaults                the default routes and the default IPv4 address (``ip -j``, through _routes)
- nft_ruleset             ``nft -j list ruleset``; nft_tables and libvirt_rejects read its JSON
- iptables_saves          each family's ``*-save`` per flavour, and the flavour the engine uses
- libvirt                 the named domains, their networks and leases (virsh, through _libvirt)

``read`` gathers what host_info returns.
"""

from __future__ import annotations

import hashlib
import json
import os

from ansible_collections.kvmnet.nat.plugins.module_utils import _libvirt
from ansible_collections.kvmnet.nat.plugins.module_utils import _routes
from ansible_collections.kvmnet.nat.plugins.module_utils._command import CommandError, run
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables import netfilter

WATCHED = ('ufw', 'firewalld', 'iptables-persistent', 'netfilter-persistent', 'nftables')
SYSCTL = '/proc/sys'

# ---------------------------------------------------------------- packages and services


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


def _run(module, cmd):
    return run(module, cmd, check=False)


def packages(module):
    """{watched package: installed?} from dpkg-query (all False without it)."""
    result = {name: False for name in WATCHED}
    dpkg = module.get_bin_path('dpkg-query')
    if dpkg:
        _rc, out, _err = _run(module, [dpkg, '-W', '-f', '${Package}\t${Status}\n'] + list(WATCHED))
        result.update({k: v for k, v in parse_dpkg(out).items() if k in WATCHED})
    return result


def install(module, wanted):
    """What ``apt-get -s install`` of ``wanted`` (the packages not installed) would remove: {packages, would_remove, error}."""
    result = {'packages': list(wanted), 'would_remove': [], 'error': ''}
    apt = module.get_bin_path('apt-get')
    if wanted and apt:
        rc, out, err = _run(module, [apt, '-s', '-q', '-o', 'Debug::NoLocking=true', 'install',
                                     '--no-install-recommends'] + list(wanted))
        result['would_remove'] = parse_apt_simulation(out)
        if rc != 0:
            result['error'] = (err or out).strip().splitlines()[-1] if (err or out).strip() else 'rc=%d' % rc
    elif wanted:
        result['error'] = 'apt-get not found'
    return result


def process_running(name, proc='/proc'):
    for pid in filter(str.isdigit, os.listdir(proc)):
        try:
            with open(os.path.join(proc, pid, 'comm')) as handle:
                if handle.read().strip() == name:
                    return True
        except OSError:
            continue
    return False


def firewalld_active(module):
    """firewalld runs: ``systemctl is-active firewalld.service``, or its process without systemd."""
    systemctl = module.get_bin_path('systemctl')
    if systemctl:
        _rc, out, _err = _run(module, [systemctl, 'is-active', 'firewalld.service'])
        return out.strip() == 'active'
    return process_running('firewalld')


def unit_states(module, names):
    """{unit: {enabled, active}} as ``systemctl is-enabled`` / ``is-active`` say ('unknown' without systemd)."""
    systemctl = module.get_bin_path('systemctl')
    result = {}
    for unit in names:
        state = {'enabled': 'unknown', 'active': 'unknown'}
        if systemctl:
            for key in state:
                _rc, out, _err = _run(module, [systemctl, 'is-%s' % key, unit])
                state[key] = out.strip() or 'unknown'
        result[unit] = state
    return result


def ufw(installed, path='/etc/ufw/ufw.conf'):
    conf = ''
    try:
        with open(path) as handle:
            conf = handle.read()
    except OSError:
        pass
    return {'installed': installed, 'enabled': installed and ufw_enabled(conf)}

# ---------------------------------------------------------------- files and sysctls


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


def forwarding(base=SYSCTL):
    """{ipv4, ipv6}: the live forwarding settings (None when unknown)."""
    return {'ipv4': read_sysctl(os.path.join(base, 'net/ipv4/ip_forward')),
            'ipv6': read_sysctl(os.path.join(base, 'net/ipv6/conf/all/forwarding'))}


def _per_interface(base, family, name):
    """{interface: value} of net.ipv<family>.conf.<interface>.<name> (its text), for every interface."""
    conf = os.path.join(base, 'net/ipv%d/conf' % family)
    found = {}
    for iface in os.listdir(conf) if os.path.isdir(conf) else []:
        value = read_sysctl(os.path.join(conf, iface, name))
        if value is not None:
            found[iface] = value
    return found


def sysctls(base=SYSCTL):
    """What the doctor checks: ipv4_forward, ipv6_forward, rp_filter {interface: int}, forwarding4 and
    forwarding6 {interface: text} (net.ipv4/ipv6.conf.<interface>.forwarding), bridge_nf (None: not loaded)."""
    rp = {iface: int(value) for iface, value in _per_interface(base, 4, 'rp_filter').items() if value.isdigit()}
    live = forwarding(base)
    return {'ipv4_forward': live['ipv4'], 'ipv6_forward': live['ipv6'], 'rp_filter': rp,
            'forwarding4': _per_interface(base, 4, 'forwarding'), 'forwarding6': _per_interface(base, 6, 'forwarding'),
            'bridge_nf': read_sysctl(os.path.join(base, 'net/bridge/bridge-nf-call-iptables'))}

# ---------------------------------------------------------------- routes


def default_address(routes, interfaces):
    """The address of the first default IPv4 route, as Ansible's ``default_ipv4.address`` gives it: the
    route's ``prefsrc``, or the first IPv4 address of its device. ``routes``: parsed ``ip -j -4 route show
    default``; ``interfaces``: ``[(ip_interface, device)]``."""
    for route in routes:
        if route.get('prefsrc'):
            return route['prefsrc']
        for iface, dev in interfaces:
            if dev == route.get('dev') and iface.version == 4:
                return str(iface.ip)
    return ''


def default_ipv4(routes_text, interfaces):
    """default_address of the text ``ip -j -4 route show default`` printed."""
    return default_address(_routes.parse_routes(routes_text), interfaces)


def defaults(module, interfaces=None, families=(4, 6)):
    """({family: device of its default route}, the default IPv4 address); ``interfaces`` read when not given."""
    devices, address = {}, ''
    for family in families:
        routes = _routes.default_routes(module, family)
        if routes:
            devices[family] = routes[0].get('dev')
            if family == 4:
                address = default_address(routes, _routes.host_interfaces(module) if interfaces is None else interfaces)
    return devices, address

# ---------------------------------------------------------------- nftables (JSON)


def nft_ruleset(module):
    """(``nft -j list ruleset`` parsed, '') or (None, why it could not be read)."""
    nft = module.get_bin_path('nft')
    if not nft:
        return None, 'nft not installed'
    rc, out, err = _run(module, [nft, '-j', 'list', 'ruleset'])
    if rc != 0:
        return None, 'nft -j list ruleset failed: %s' % (err or out).strip()
    try:
        return json.loads(out or '{}'), ''
    except ValueError as exc:
        return None, 'nft printed no JSON: %s' % exc


def _nft_index(ruleset):
    """({(family, table): table record}, {(family, table, chain): chain}, {(family, table, chain): [rule]})."""
    items = ruleset.get('nftables', []) if isinstance(ruleset, dict) else []
    tables, chains, rules = {}, {}, {}
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        if 'table' in item:
            t = item['table']
            tables[(t.get('family'), t.get('name'))] = {'family': t.get('family'), 'name': t.get('name'),
                                                        'base': [], 'iptables': False}
        elif 'chain' in item:
            c = item['chain']
            chains[(c.get('family'), c.get('table'), c.get('name'))] = c
        elif 'rule' in item:
            r = item['rule']
            rules.setdefault((r.get('family'), r.get('table'), r.get('chain')), []).append(r)
    return tables, chains, rules


def libvirt_rejects(ruleset, family):
    """libvirt's nftables table ``libvirt_network`` of ``family`` ('ip' or 'ip6') exists and has a reject rule."""
    _tables, _chains, rules = _nft_index(ruleset)
    return any(isinstance(expr, dict) and 'reject' in expr
               for (fam, table, _chain), rule_list in rules.items() if (fam, table) == (family, 'libvirt_network')
               for rule in rule_list for expr in rule.get('expr', []))


IPTABLES_TABLES = ('filter', 'nat', 'mangle', 'raw', 'security')


def nft_tables(ruleset):
    """From ``nft -j list ruleset``: [{family, name, iptables, base: [{name, hook, stops: [(verdict, rule)]}]}].

    ``iptables`` marks iptables-nft's tables (filter, nat, mangle, raw, security of ip and ip6, and any
    table holding an xtables expression): iptables-save reads them, so the walk covers them. A chain's
    stops are its drop and reject rules, and those of the chains it jumps or goes to, with their
    interface matches (rule ``ifaces``: (iifname|oifname, value, negated)); a base chain with policy
    drop stops too.
    """
    tables, chains, rules = _nft_index(ruleset)
    for (family, table_name), table in tables.items():
        # iptables-nft's tables: iptables-save reads (and the walk sees) every rule in them, whoever wrote it
        table['iptables'] = family in ('ip', 'ip6') and table_name in IPTABLES_TABLES
    for (family, table_name, _chain), rule_list in rules.items():
        if any(_iptables_made(rule) for rule in rule_list) and (family, table_name) in tables:
            tables[(family, table_name)]['iptables'] = True
    for key, chain in chains.items():
        family, table_name, name = key
        if 'hook' not in chain or (family, table_name) not in tables:
            continue
        stops = _chain_stops(key, chains, rules, set())
        if chain.get('policy') == 'drop':
            stops.append(('drop', {'text': 'policy drop', 'ifaces': ()}))
        tables[(family, table_name)]['base'].append({'name': name, 'hook': chain['hook'], 'stops': stops})
    return list(tables.values())


def _iptables_made(rule):
    return any('xt' in expr for expr in rule.get('expr', []) if isinstance(expr, dict)) or \
        rule.get('comment', '').startswith('kvmnet.nat')


def _rule_parts(rule):
    """(interface matches, drop/reject verdict or None, jump/goto target or None) of one rule."""
    ifaces, verdict, target = [], None, None
    for expr in rule.get('expr', []):
        if not isinstance(expr, dict):
            continue
        if 'match' in expr:
            m = expr['match']
            left = m.get('left', {})
            meta = left.get('meta', {}).get('key') if isinstance(left, dict) and isinstance(left.get('meta'), dict) else None
            if meta in ('iifname', 'oifname') and isinstance(m.get('right'), str):
                ifaces.append((meta, m['right'], m.get('op') == '!='))
        for word in ('drop', 'reject'):
            if word in expr:
                verdict = word
        for word in ('jump', 'goto'):
            if isinstance(expr.get(word), dict):
                target = expr[word].get('target')
    return ifaces, verdict, target


def _chain_stops(key, chains, rules, seen):
    if key in seen:
        return []
    seen.add(key)
    family, table_name, _name = key
    stops = []
    for rule in rules.get(key, []):
        ifaces, verdict, target = _rule_parts(rule)
        text = _nft_text(rule, ifaces, verdict or ('-> %s' % target if target else ''))
        if verdict:
            stops.append((verdict, {'text': text, 'ifaces': tuple(ifaces)}))
        elif target and (family, table_name, target) in chains:
            for inner_verdict, inner in _chain_stops((family, table_name, target), chains, rules, seen):
                stops.append((inner_verdict, {'text': inner['text'], 'ifaces': tuple(ifaces) + inner['ifaces']}))
    return stops


def _nft_text(rule, ifaces, verdict):
    parts = ['%s %s"%s"' % (key, '!= ' if negated else '', value) for key, value, negated in ifaces]
    return '"%s"' % ' '.join(parts + [verdict]).strip() + ' (chain %s)' % rule.get('chain')

# ---------------------------------------------------------------- iptables: which flavour holds the rules


def iptables_saves(module, family, legacy=netfilter.legacy_tables):
    """Every iptables flavour's save of ``family`` with packet counts, and the flavour the engine keeps the
    rules in: the backend's own reader (iptables.netfilter.read_saves), so both always agree."""
    return netfilter.read_saves(module, family, counters=True, legacy=legacy)

# ---------------------------------------------------------------- libvirt


def libvirt(module, uri, guests, host_ips):
    """(record, '') of the named domains with their networks and leases (_libvirt.read_guests), or (None, why
    not); what libvirt could not tell about a guest is a warning."""
    virsh = module.get_bin_path('virsh')
    if not virsh:
        return None, 'virsh not installed'
    try:
        record, warnings = _libvirt.read_guests(module, virsh, uri, guests, host_ips)
    except CommandError as exc:
        return None, str(exc)
    for warning in warnings:
        module.warn(warning)
    return record, ''

# ---------------------------------------------------------------- host_info


def read(module, simulate_install=(), paths=None, units=(), from_ruleset=None):
    """The facts the role decides on (host_info's result), from read-only commands; ``paths``: {name: path} to
    look at; ``units``: systemd units whose enablement to report; ``from_ruleset``: a function of the parsed
    ``nft -j list ruleset`` (None without nft) giving more facts (host_info: the backend)."""
    installed = packages(module)
    ruleset, _error = nft_ruleset(module)
    return {**(from_ruleset(ruleset) if from_ruleset else {}),
            'packages': installed,
            'files': {name: file_state(path) for name, path in (paths or {}).items()},
            'forwarding': forwarding(),
            'default_ipv4': defaults(module, families=(4,))[1],
            'firewalld': {'installed': installed['firewalld'], 'active': firewalld_active(module)},
            'units': unit_states(module, units),
            'ufw': ufw(installed['ufw']),
            'netfilter_persistent': {'installed': installed['netfilter-persistent']},
            'libvirt_nftables': {'ipv4': libvirt_rejects(ruleset, 'ip'), 'ipv6': libvirt_rejects(ruleset, 'ip6')},
            'install': install(module, [name for name in simulate_install if not installed.get(name)])}
