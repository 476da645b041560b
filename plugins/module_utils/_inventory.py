# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The inventory's port declarations, one schema for every place a port is declared: PRIVATE.

A hypervisor lists its guests (``expose_guests: [{name, ip, ..., ports: [...]}]``), or a guest host
names its hypervisor (``expose_hypervisor``) and lists its ports (``expose_ports: [...]``). Both
use the same port schema, the verify playbook reads the same declarations, and every check runs on
the controller before anything on any host changes. Errors name the inventory host, the guest and
the key, and suggest the key that was probably meant.
"""

from __future__ import annotations

import collections
import difflib

from ansible_collections.kvmnet.nat.plugins.module_utils import _forward
from ansible_collections.kvmnet.nat.plugins.module_utils import _match

# per port: what the module supports per forward, plus what the verify playbook sends and expects
PORT_KEYS = ('host', 'guest', 'proto', 'sources', 'allow_in_use', 'public_ip', 'in_interface', 'masquerade',
             'send', 'expect')
# per guest, hypervisor side; the guest-side variables carry the same meaning
GUEST_KEYS = ('name', 'ip', 'masquerade', 'guest_network', 'ports')
GUEST_VARS = {'expose_guest_name': 'name', 'expose_guest_ip': 'ip', 'expose_masquerade': 'masquerade',
              'expose_guest_network': 'guest_network', 'expose_ports': 'ports'}
# per port: what only the hypervisor side decides, unless it lets its guest hosts choose (expose_guest_side_may_set)
HYPERVISOR_CHOICES = ('public_ip', 'in_interface', 'allow_in_use')
MAY_SET_VAR = 'expose_guest_side_may_set'
# which domain a guest host declares: its inventory name, or the one the hypervisor side maps it to
DOMAINS_VAR = 'expose_guest_domains'
# what people write instead (checked before the closest-spelling guess)
ALIASES = {
    'protocol': 'proto', 'source': 'sources', 'src': 'sources', 'allow': 'sources', 'allowed': 'sources',
    'port': 'host', 'host_port': 'host', 'public_port': 'host', 'from': 'host', 'guest_port': 'guest',
    'to': 'guest', 'dport': 'guest', 'interface': 'in_interface', 'iface': 'in_interface',
    'public': 'public_ip', 'address': 'ip', 'addr': 'ip', 'guest_ip': 'ip', 'domain': 'name',
    'masq': 'masquerade', 'snat': 'masquerade', 'network': 'guest_network', 'forwards': 'ports',
}


class DeclarationError(Exception):
    """Every problem found in the declarations, one line each."""

    def __init__(self, errors):
        self.errors = list(errors)
        super().__init__('; '.join(self.errors))


def _suggest(key, known):
    """" (did you mean 'x'?)" for a key close to a known key, or to a word people write for one."""
    if not isinstance(key, str):
        return ''
    words = dict({name: name for name in known}, **{alias: target for alias, target in ALIASES.items()
                                                    if target in known})
    close = difflib.get_close_matches(key.lower(), list(words), n=1, cutoff=0.75)
    return " (did you mean '%s'?)" % words[close[0]] if close else ''


def _unknown_keys(item, known, where):
    return ['%s: unknown key %r%s; known keys: %s' % (where, key, _suggest(key, known), ', '.join(known))
            for key in item if key not in known]


def _is_text(value):
    return isinstance(value, str)


def _check(value, parse, where, key, errors):
    try:
        return parse(value)
    except ValueError as exc:
        errors.append('%s: %s: %s' % (where, key, exc))
        return None


def _choice(value, choices, where, key, errors):
    if value in choices:
        return value
    hint = ''
    if isinstance(value, str) and value.strip().lower() in choices:
        hint = " (did you mean '%s'?)" % value.strip().lower()
    errors.append('%s: %s %r must be one of %s%s' % (where, key, value, ', '.join(choices), hint))
    return None


def _address(value):
    ip = _forward.parse_address(value, 'address')
    reason = _forward.unusable(ip)
    if reason:
        raise ValueError('address %s is %s; no forward can use it' % (ip, reason))
    return str(ip)


def _network(value):
    return str(_forward.parse_network(value, 'network'))


def _ports(value):
    ports = _forward.parse_ports(value)
    return ports.first if ports.size == 1 else str(ports)


def check_port(port, where):
    """One port declaration -> (normalised port, errors). ``where`` names host, guest and index."""
    if not isinstance(port, dict):
        hint = ' (write {host: %s})' % port if isinstance(port, (int, str)) and not isinstance(port, bool) else ''
        return None, ['%s: a port declaration is a mapping like {host: 8080, guest: 80}, not %r%s'
                      % (where, port, hint)]
    errors = _unknown_keys(port, PORT_KEYS, where)
    result = {}
    if 'host' not in port:
        errors.append('%s: no "host" (the public port or range, like 8080 or 10000-10009)' % where)
    else:
        result['host'] = _check(port['host'], _ports, where, 'host', errors)
    if port.get('guest') is not None:
        result['guest'] = _check(port['guest'], _ports, where, 'guest', errors)
    if port.get('proto') is not None:
        result['proto'] = _choice(port['proto'], _forward.PROTOCOLS, where, 'proto', errors)
    if port.get('masquerade') is not None:
        result['masquerade'] = _choice(port['masquerade'], _forward.MASQUERADE_MODES, where, 'masquerade', errors)
    if 'sources' in port and port['sources'] is not None:
        sources = port['sources']
        if not isinstance(sources, list):
            errors.append('%s: sources must be a list of addresses or networks, like [198.51.100.0/24], not %r'
                          % (where, sources))
        else:
            result['sources'] = [_check(s, _network, where, 'sources[%d]' % i, errors) for i, s in enumerate(sources)]
    if 'allow_in_use' in port:
        if not isinstance(port['allow_in_use'], bool):
            errors.append('%s: allow_in_use must be true or false, not %r' % (where, port['allow_in_use']))
        result['allow_in_use'] = port['allow_in_use'] is True
    if port.get('public_ip') not in (None, ''):
        result['public_ip'] = _check(port['public_ip'], _address, where, 'public_ip', errors)
    if port.get('in_interface') not in (None, ''):
        if not _forward.valid_interface(port['in_interface']):
            errors.append('%s: in_interface %r is not an interface name' % (where, port['in_interface']))
        result['in_interface'] = port['in_interface']
    for key in ('send', 'expect'):
        if port.get(key) is not None:
            if not _is_text(port[key]):
                errors.append('%s: %s must be text, not %r' % (where, key, port[key]))
            result[key] = port[key]
    if _is_text(port.get('expect')):
        problem = _match.problem(port['expect'])
        if problem:
            errors.append('%s: expect %r %s' % (where, port['expect'], problem))
    return result, errors


def check_guest(guest, where, host, names=None, port_where=None):
    """One guest (name, ip, masquerade, guest_network, ports) -> (normalised guest, errors).

    ``names`` maps a key to what the admin wrote (a guest-side variable name) for messages;
    ``port_where`` formats the place of port N.
    """
    names = names or {}
    errors = []
    name = guest.get('name')
    label = where
    if not (_is_text(name) and _forward._GUEST_NAME_RE.fullmatch(name)):
        errors.append('%s: %s %r must be a libvirt domain name: 1-64 characters of letters, digits and ._+:@-'
                      % (where, names.get('name', 'name'), name))
        name = None
    elif not names:
        label = '%s (%s)' % (where, name)
    result = {'name': name, 'declared_by': host}
    if guest.get('ip') not in (None, ''):
        result['ip'] = _check(guest['ip'], _address, label, names.get('ip', 'ip'), errors)
    if guest.get('masquerade') is not None:
        result['masquerade'] = _choice(guest['masquerade'], _forward.MASQUERADE_MODES, label,
                                       names.get('masquerade', 'masquerade'), errors)
    if guest.get('guest_network') not in (None, ''):
        result['guest_network'] = _check(guest['guest_network'], _network, label,
                                         names.get('guest_network', 'guest_network'), errors)
    ports = guest.get('ports')
    if not isinstance(ports, list):
        errors.append('%s: %s must be a list of port declarations like [{host: 8080, guest: 80}], not %r'
                      % (label, names.get('ports', 'ports'), ports))
        ports = []
    result['ports'] = []
    for index, port in enumerate(ports):
        checked, problems = check_port(port, (port_where or label + ' ports[%d]') % index)
        errors.extend(problems)
        result['ports'].append(checked)
    return result, errors


def hypervisor_guests(host, guests):
    """The hypervisor side: ``expose_guests`` of inventory host ``host``."""
    if guests in (None, ''):
        return [], []
    if not isinstance(guests, list):
        return [], ['%s: expose_guests must be a list of guests, not %r' % (host, guests)]
    result, errors = [], []
    for index, guest in enumerate(guests):
        where = '%s: expose_guests[%d]' % (host, index)
        if not isinstance(guest, dict):
            errors.append('%s: a guest is a mapping like {name: web01, ports: [...]}, not %r' % (where, guest))
            continue
        errors.extend(_unknown_keys(guest, GUEST_KEYS, where))
        checked, problems = check_guest(guest, where, host)
        result.append(checked)
        errors.extend(problems)
    return result, errors


def may_set(value, hypervisor=''):
    """The hypervisor's ``expose_guest_side_may_set`` -> (tuple of choices, errors)."""
    if value in (None, ''):
        return (), []
    where = '%s: %s' % (hypervisor, MAY_SET_VAR) if hypervisor else MAY_SET_VAR
    if not isinstance(value, (list, tuple)):
        return (), ['%s must be a list of %s, not %r' % (where, ', '.join(HYPERVISOR_CHOICES), value)]
    bad = [item for item in value if item not in HYPERVISOR_CHOICES]
    if bad:
        return (), ['%s: %s not one of %s' % (where, ', '.join(repr(item) for item in bad), ', '.join(HYPERVISOR_CHOICES))]
    return tuple(value), []


def guest_domains(value, hypervisor=''):
    """The hypervisor's ``expose_guest_domains`` ({guest host: the domain it declares}) -> (dict, errors)."""
    if value in (None, ''):
        return {}, []
    where = '%s: %s' % (hypervisor, DOMAINS_VAR) if hypervisor else DOMAINS_VAR
    if not isinstance(value, dict):
        return {}, ['%s must map a guest host (inventory name) to the libvirt domain it declares, like '
                    '{app01: app01-vm}, not %r' % (where, value)]
    errors = []
    for host, domain in value.items():
        if not (_is_text(host) and host):
            errors.append('%s: %r is not an inventory host name' % (where, host))
        if not (_is_text(domain) and _forward._GUEST_NAME_RE.fullmatch(domain)):
            errors.append('%s: %s: %r must be a libvirt domain name: 1-64 characters of letters, digits and ._+:@-'
                          % (where, host, domain))
    return ({} if errors else dict(value)), errors


def _guest_side_choices(host, ports, allowed, hypervisor):
    """Ports of a guest host that choose what only the hypervisor side may (unless it allows it)."""
    errors = []
    for index, port in enumerate(ports if isinstance(ports, list) else []):
        if not isinstance(port, dict):
            continue
        for key in HYPERVISOR_CHOICES:
            if key in allowed or port.get(key) in (None, '', False):
                continue
            errors.append('%s: expose_ports[%d]: %s is chosen by the hypervisor side, not by a guest host (to let '
                          'guest hosts choose it, set %s: [%s] on hypervisor %s)'
                          % (host, index, key, MAY_SET_VAR, key, hypervisor or '(its expose_hypervisor)'))
    return errors


def guest_side(host, variables, allowed=(), hypervisor='', domains=None):
    """The guest side: inventory host ``host`` with ``expose_hypervisor`` and ``expose_ports``.

    ``allowed``: which of HYPERVISOR_CHOICES the hypervisor (inventory name ``hypervisor``) lets its
    guest hosts set per port; any other one set here is refused. ``domains``: the hypervisor's
    ``expose_guest_domains``; a guest host declares the domain of its own inventory name or the one
    ``domains`` maps it to (the default when ``expose_guest_name`` is unset), never another one.
    """
    errors = []
    mapped = (domains or {}).get(host)
    name = variables.get('expose_guest_name')
    if name is None or name == '':
        name = mapped or host
    elif _is_text(name) and name not in (host, mapped):
        errors.append('%s: expose_guest_name %r is not this guest host\'s own domain (%s): a guest host declares '
                      'only its own domain (to let it declare %s, set %s: {%s: %s} on hypervisor %s)'
                      % (host, name, '%s or %s' % (host, mapped) if mapped else host, name, DOMAINS_VAR, host, name,
                         hypervisor or '(its expose_hypervisor)'))
    ports = variables.get('expose_ports')
    if ports is None:
        ports = []
    guest = {'name': name, 'ports': ports}
    for var, key in GUEST_VARS.items():
        if var not in ('expose_guest_name', 'expose_ports') and variables.get(var) is not None:
            guest[key] = variables[var]
    names = {key: var for var, key in GUEST_VARS.items()}
    result, problems = check_guest(guest, host, host, names=names, port_where=host + ': expose_ports[%d]')
    errors.extend(problems)
    errors.extend(_guest_side_choices(host, ports, allowed, hypervisor))
    return result, errors


def duplicates(guests, hypervisor):
    """Domains declared more than once (two sources would give one domain two addresses): one error each."""
    by_name = {}
    for guest in guests:
        if guest.get('name') is not None:
            by_name.setdefault(guest['name'], []).append(guest['declared_by'])
    errors = []
    for name, sources in by_name.items():
        if len(sources) < 2:
            continue
        places = ["%s's expose_guests" % source if source == hypervisor else 'guest host %s' % source for source in sources]
        errors.append('guest %s is declared %d times, in %s: a domain has one declaration (one address, with '
                      'all its ports); keep one and move the ports there' % (name, len(sources), ' and in '.join(places)))
    return errors


def hypervisor_of(host, variables):
    """The ``expose_hypervisor`` a guest host names, or None; an error when it is not a name."""
    value = variables.get('expose_hypervisor')
    if value in (None, ''):
        return None, []
    if not _is_text(value):
        return None, ['%s: expose_hypervisor must be the inventory name of a hypervisor (text), not %r'
                      % (host, value)]
    return value, []


# A port without public_ip takes the hypervisor's public address of its family, not known here: it is
# this one placeholder, the same for every such port and unlike every address written out.
DEFAULT_PUBLIC = 'the public address'
Claim = collections.namedtuple('Claim', 'guest host_ports proto family public_ip in_interface')


def _claim(guest, port):
    """What one declared port takes, for _forward.scopes_meet: its family from its public_ip, else from the
    guest's ip, else unknown (None: the guest's address is found later and may be of either family); an
    in_interface left out is the hypervisor's, unknown here (None: every interface)."""
    public = port.get('public_ip')
    address = public or guest.get('ip')
    family = _forward.parse_address(address, 'address').version if address else None
    return Claim(guest, _forward.parse_ports(port['host']), port.get('proto') or 'tcp', family,
                 public or DEFAULT_PUBLIC, port.get('in_interface'))


def overlaps(guests):
    """Two declarations claiming one host port, by the rule of the module (_forward.scopes_meet): the same
    protocol, family, public address and interface, or one of them unscoped. Ports that failed their own
    check are left out. Errors come in declaration order, the later claim named first.
    """
    claims = [_claim(guest, port) for guest in guests if guest.get('name') is not None
              for port in guest['ports'] if port and port.get('host') is not None]
    errors = []
    for earlier, later in sorted(_forward.overlapping(claims), key=lambda pair: (pair[1], pair[0])):
        claim, other = claims[later], claims[earlier]
        errors.append('%s %s/%s (declared by %s) and %s %s/%s (declared by %s) claim the same port on %s'
                      % (claim.guest['name'], claim.proto, claim.host_ports, claim.guest['declared_by'], other.guest['name'],
                         other.proto, other.host_ports, other.guest['declared_by'], claim.public_ip))
    return errors


def orphans(hostvars, hypervisor_names):
    """Guest hosts whose ``expose_hypervisor`` names no hypervisor in ``hypervisor_names``."""
    result = []
    for name in sorted(hostvars):
        wanted, _problems = hypervisor_of(name, hostvars[name])
        if wanted is not None and wanted not in hypervisor_names:
            result.append({'host': name, 'expose_hypervisor': wanted})
    return result
