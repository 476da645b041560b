# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Inventory queries of kvmnet.nat: turn inventory into the forwards of one hypervisor."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.kvmnet.nat.plugins.module_utils import _inventory

try:
    import jmespath
except ImportError:  # reported when the filter is used, not at import time
    jmespath = None

# Guest hosts naming the wanted hypervisor; the name travels as data in every record, so nothing
# from the inventory is ever pasted into the query.
QUERY = '[?expose_hypervisor == wanted_hypervisor]'
GUEST_VARS = ('expose_hypervisor',) + tuple(_inventory.GUEST_VARS)


def _raise(exc):
    raise AnsibleFilterError('%d problem(s) in the inventory, nothing was changed:\n- %s'
                             % (len(exc.errors), '\n- '.join(exc.errors)))


def _guest_hosts(hostvars, hypervisor):
    if jmespath is None:
        raise AnsibleFilterError('kvmnet.nat.guest_exposures needs the Python package jmespath on the controller '
                                 '(pip install jmespath, or see meta/execution-environment.yml)')
    records = []
    for name in hostvars:
        variables = hostvars[name]
        records.append(dict({key: variables.get(key) for key in GUEST_VARS}, inventory_hostname=name,
                            wanted_hypervisor=str(hypervisor)))
    return jmespath.search(QUERY, records) or []


def _may_set(guest_side_may_set, guest_domains, host):
    allowed, errors = _inventory.may_set(guest_side_may_set, host)
    domains, problems = _inventory.guest_domains(guest_domains, host)
    errors.extend(problems)
    if errors:
        _raise(_inventory.DeclarationError(errors))
    return allowed, domains


def guest_exposures(hostvars, hypervisor, guest_side_may_set=None, guest_domains=None):
    """Exposures declared on guest hosts whose ``expose_hypervisor`` is ``hypervisor``, validated.

    Returns ``[{name, ip, masquerade, guest_network, ports, declared_by}]`` (unset keys left out);
    ``name`` is ``expose_guest_name`` or the inventory name. ``guest_side_may_set``: which of public_ip,
    in_interface, allow_in_use the guest hosts may set (default none). ``guest_domains``: {guest host:
    domain} the hypervisor lets a guest host declare besides the one of its inventory name (default none).
    """
    allowed, domains = _may_set(guest_side_may_set, guest_domains, str(hypervisor))
    guests, errors = [], []
    for record in _guest_hosts(hostvars, hypervisor):
        guest, problems = _inventory.guest_side(record['inventory_hostname'], record, allowed, str(hypervisor), domains)
        guests.append(guest)
        errors.extend(problems)
    if errors:
        _raise(_inventory.DeclarationError(errors))
    return [_compact(guest) for guest in guests]


def _compact(guest):
    return {key: value for key, value in guest.items() if value is not None}


def guest_hosts(hostvars):
    """The guest-side variables of every inventory host that sets ``expose_hypervisor``, read once and
    grouped by the hypervisor name it gives.

    Each ``hostvars[name]`` assembles that host's variables, so a play that scans ``hostvars`` once per
    hypervisor costs hypervisors x hosts of those; read here once (a ``run_once`` task) and passed to
    declared_exposures and orphan_guests as ``guest_hosts``, it costs hosts, and each hypervisor then
    looks at its own group only. Returns ``{by_hypervisor: {name: {host: variables}}, not_text: {host:
    variables}}``; ``not_text`` holds the hosts whose ``expose_hypervisor`` is not text (every hypervisor
    reports them). Unset variables are left out.
    """
    by_hypervisor, not_text = {}, {}
    for name in hostvars:
        variables = hostvars[name]
        wanted = variables.get('expose_hypervisor')
        if wanted in (None, ''):
            continue
        values = {key: variables.get(key) for key in GUEST_VARS if key != 'expose_hypervisor'}
        record = dict({key: value for key, value in values.items() if value is not None}, expose_hypervisor=wanted)
        if _inventory.hypervisor_of(name, record)[1]:
            not_text[name] = record
        else:
            by_hypervisor.setdefault(str(wanted), {})[name] = record
    return {'by_hypervisor': by_hypervisor, 'not_text': not_text}


def _index(guest_hosts):
    if not isinstance(guest_hosts, dict) or not isinstance(guest_hosts.get('by_hypervisor'), dict) \
            or not isinstance(guest_hosts.get('not_text'), dict):
        raise AnsibleFilterError('guest_hosts must be what the filter kvmnet.nat.guest_hosts returns '
                                 '({by_hypervisor: ..., not_text: ...}), not %r' % (type(guest_hosts).__name__,))
    return guest_hosts


def _guest_source(hostvars, guest_hosts, hypervisor):
    """The mapping of inventory name to variables that the guest side of ``hypervisor`` is read from:
    ``hostvars``, or from ``guest_hosts`` the hosts that name it and those that name nothing readable."""
    if guest_hosts is None:
        return hostvars
    index = _index(guest_hosts)
    source = dict(index['not_text'])
    source.update(index['by_hypervisor'].get(str(hypervisor)) or {})
    if not all(isinstance(variables, dict) for variables in source.values()):
        raise AnsibleFilterError('guest_hosts must be what the filter kvmnet.nat.guest_hosts returns: '
                                 'each host with a mapping of its variables')
    return source


def declared_exposures(hostvars, host, hypervisor_name=None, guests=None, guest_hosts=None, guest_side_may_set=None,
                       guest_domains=None):
    """Every exposure of hypervisor ``host``: its ``expose_guests`` and every guest host naming it
    (``hypervisor_name``, default ``host``), validated against one schema; all problems at once.

    ``guests`` is the hypervisor's ``expose_guests`` as the caller sees it (role parameters and play
    variables are not in ``hostvars``); when None, ``hostvars[host].expose_guests`` is used.
    ``guest_hosts`` (what guest_hosts returns) spares reading every host's variables again.
    ``guest_side_may_set`` (the hypervisor's ``expose_guest_side_may_set``, read from ``hostvars[host]``
    when None): which of public_ip, in_interface and allow_in_use a guest host may set on its ports;
    default none. ``guest_domains`` (the hypervisor's ``expose_guest_domains``, read likewise): {guest
    host: domain}; a guest host declares the domain of its inventory name or the one mapped here, never
    another. A domain declared
    twice (by the hypervisor and a guest host, or by two of them) is refused, naming both.
    """
    name = hypervisor_name or host
    own = None
    if guests is None or guest_side_may_set is None or guest_domains is None:
        own = hostvars[host] if host in hostvars else {}
    if guests is None:
        guests = own.get('expose_guests')
    if guest_side_may_set is None:
        guest_side_may_set = own.get(_inventory.MAY_SET_VAR)
    if guest_domains is None:
        guest_domains = own.get(_inventory.DOMAINS_VAR)
    source = _guest_source(hostvars, guest_hosts, name)
    guests, errors = _inventory.hypervisor_guests(host, guests)
    allowed, problems = _inventory.may_set(guest_side_may_set, host)
    errors.extend(problems)
    domains, problems = _inventory.guest_domains(guest_domains, host)
    errors.extend(problems)
    for other in source:
        _wanted, problems = _inventory.hypervisor_of(other, source[other])
        errors.extend(problems)
    for record in _guest_hosts(source, name):
        guest, problems = _inventory.guest_side(record['inventory_hostname'], record, allowed, host, domains)
        guests.append(guest)
        errors.extend(problems)
    errors.extend(_inventory.duplicates(guests, host))
    errors.extend(_inventory.overlaps(guests))      # ports that failed their own check are left out
    if errors:
        _raise(_inventory.DeclarationError(errors))
    return [_compact(guest) for guest in guests]


def hypervisor_names(hostvars, hosts):
    """The names guest hosts use for these hypervisors: each one's expose_hypervisor_name, or its inventory name."""
    return [(hostvars[host].get('expose_hypervisor_name') if host in hostvars else None) or host for host in hosts or []]


def orphan_guests(hostvars, hypervisors, guest_hosts=None):
    """Guest hosts whose ``expose_hypervisor`` names none of the hypervisors ``hypervisors`` (inventory
    names, e.g. ``ansible_play_hosts_all``): ``[{host, expose_hypervisor}]``. ``guest_hosts`` as for
    declared_exposures."""
    names = set(hypervisor_names(hostvars, hypervisors))
    if guest_hosts is None:
        return _inventory.orphans(hostvars, names)
    # only groups naming no hypervisor of the play are read; the not_text hosts name none at all
    orphaned = {}
    for wanted, hosts in _index(guest_hosts)['by_hypervisor'].items():
        if wanted not in names:
            orphaned.update(hosts)
    return _inventory.orphans(orphaned, names)


PORT_OPTIONS = ('public_ip', 'in_interface', 'allow_in_use')


DOCTOR_OPTIONS = ('send', 'expect')


def exposure_forwards(exposures, doctor=False):
    """Flatten exposures (a guest with its ports) into the forwards of kvmnet.nat.forwards.

    With ``doctor``, for kvmnet.nat.doctor: a guest without ip is allowed (the doctor finds the address)
    and each port's send/expect is kept."""
    forwards = []
    for guest in exposures or []:
        if 'name' not in guest:
            raise AnsibleFilterError('an exposure without a name: %r' % (guest,))
        if not guest.get('ip') and not doctor:
            raise AnsibleFilterError('guest %s has no ip; resolve it (kvmnet.nat.guest_addresses) first' % guest['name'])
        for port in guest.get('ports') or []:
            if not isinstance(port, dict) or 'host' not in port:
                raise AnsibleFilterError('guest %s: a port without "host": %r' % (guest['name'], port))
            forward = {'guest': guest['name'], 'host_port': port['host'],
                       'guest_port': port['guest'] if port.get('guest') is not None else port['host'],
                       'proto': port.get('proto') or 'tcp', 'sources': port.get('sources') or [],
                       'masquerade': port.get('masquerade') or guest.get('masquerade') or 'auto'}
            if guest.get('ip'):
                forward['guest_ip'] = guest['ip']
            if guest.get('guest_network'):
                forward['guest_network'] = guest['guest_network']
            for optional in PORT_OPTIONS + (DOCTOR_OPTIONS if doctor else ()):
                if port.get(optional):
                    forward[optional] = port[optional]
            forwards.append(forward)
    return forwards


def resolve_exposures(exposures, addresses):
    """Give exposures the addresses ``kvmnet.nat.guest_addresses`` resolved (``addresses``: its result).

    Returns ``{exposures, unresolved}``: exposures with an address, and ``{name, reason}`` for the others.
    A guest the module left unresolved stays so even with an address in the inventory (a guest side's
    address it refused).
    """
    found = {guest['name']: guest for guest in (addresses or {}).get('guests') or []}
    reasons = {item['name']: item['reason'] for item in (addresses or {}).get('unresolved') or []}
    resolved, unresolved = [], []
    for exposure in exposures or []:
        guest = found.get(exposure.get('name'))
        if exposure.get('ip') and exposure.get('name') not in reasons:
            resolved.append(exposure)
        elif guest is not None and guest.get('ip'):
            resolved.append(dict(exposure, ip=guest['ip']))
        else:
            unresolved.append({'name': exposure.get('name'),
                               'reason': reasons.get(exposure.get('name'), 'no address known')})
    return {'exposures': resolved, 'unresolved': unresolved}


class FilterModule:
    def filters(self):
        return {'guest_exposures': guest_exposures, 'declared_exposures': declared_exposures,
                'orphan_guests': orphan_guests, 'exposure_forwards': exposure_forwards,
                'resolve_exposures': resolve_exposures, 'guest_hosts': guest_hosts}
