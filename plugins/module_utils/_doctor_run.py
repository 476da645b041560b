# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""What kvmnet.nat.doctor does, from its parameters to its result: PRIVATE to this collection, no stable API.

The module (plugins/modules/doctor.py) is its documentation, its argument spec and a ``main`` that hands
the module and each firewall backend's diagnosis (iptables/diagnose.py, nftables/diagnose.py) to ``run``.
Here: the parameters checked (the backend's own by the backend), the backend chosen as kvmnet.nat.forwards
chooses it (``backend: auto``, _backends), the host read once into a View (_host, _routes, _listeners,
the backend for its firewall), each forward's missing guest address found (our DNAT, else libvirt), the
guests' ports and, with ``probe``, the public addresses connected to; then every selected forward is
diagnosed (_doctor.py) and the result returned.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.kvmnet.nat.plugins.module_utils import _backends
from ansible_collections.kvmnet.nat.plugins.module_utils import _command
from ansible_collections.kvmnet.nat.plugins.module_utils import _connect
from ansible_collections.kvmnet.nat.plugins.module_utils import _doctor
from ansible_collections.kvmnet.nat.plugins.module_utils import _forward
from ansible_collections.kvmnet.nat.plugins.module_utils import _host
from ansible_collections.kvmnet.nat.plugins.module_utils import _listeners
from ansible_collections.kvmnet.nat.plugins.module_utils import _match
from ansible_collections.kvmnet.nat.plugins.module_utils import _routes
from ansible_collections.kvmnet.nat.plugins.module_utils._backend import RulesetError
from ansible_collections.kvmnet.nat.plugins.module_utils._schema import FORWARD_KEYS

# ---------------------------------------------------------------- reading the host, once


def _read_host(module, view):
    """Everything the checks read, once: addresses, default routes, each family's rules as the backend reads
    them (iptables: in the flavour the engine uses), the saved files, sysctls, firewalld, the nftables ruleset
    and the guests in libvirt."""
    params = module.params
    view.interfaces = _routes.host_interfaces(module)
    view.default_dev, default_ip = _host.defaults(module, view.interfaces)
    if not params['public_ip'] and default_ip:
        params['public_ip'] = default_ip
    view.families = {family: _doctor.Family(family, **view.backend.read(family)) for family in _forward.FAMILIES}
    if params['persist_path']:
        _read_saved(view, params['persist_path'])
    view.sysctl = _host.sysctls()
    view.firewalld = _host.firewalld_active(module)
    ruleset, view.nft_error = _host.nft_ruleset(module)
    view.nft = None if ruleset is None else _host.nft_tables(ruleset)
    host_ips = {iface.ip for iface, _dev in view.interfaces}
    view.libvirt, view.libvirt_error = _host.libvirt(module, params['uri'], {raw['guest'] for raw in params['forwards']},
                                                     host_ips)


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
            for name, address in view.backend.dnat_destinations(fam.tables).items():
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
        backend = view.backend
        outcome = backend.walk(fam.tables, 'nat', 'OUTPUT', packet)
        rule = outcome.rule if outcome.target == 'DNAT' else None
        before = backend.counter(fam.tables, 'nat', rule)
        answer, error = _connect.probe(packet['dst'], fwd.host_ports.first, 'tcp', '', timeout)
        time.sleep(0.05)
        after = backend.counter(backend.reread(fam, 'nat'), 'nat', rule)
        record = {'address': packet['dst'], 'answer': ('got no answer (%s)' % error) if error else
                  ('the guest answered%s' % (' %r' % answer if answer else ''))}
        record['delta'] = (after - before) if rule and before is not None and after is not None else 0
        if rule and before is None:         # a DNAT without a counter (nftables' dispatch map): the walk found it
            record['uncounted'], record['error'] = _doctor.where('nat', outcome), bool(error)
        if not record['delta']:
            record['taken'] = _doctor.where('nat', outcome) if outcome.rule else 'no DNAT rule in nat OUTPUT takes it'
        view.probes[fwd.label] = record

# ---------------------------------------------------------------- the run


def _check_params(module, backend):
    """Every problem with the parameters at once, before anything is read (the backend's own by the backend)."""
    params = module.params
    problems = list(backend.problems())
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
        fam.saved_path = view.backend.saved_path(path, family)
        try:
            with open(fam.saved_path) as handle:
                fam.saved_text = handle.read()
        except FileNotFoundError:
            fam.saved_text = None
        except OSError as exc:
            fam.saved_text = '# unreadable: %s\n' % exc


def _chosen(backend, choice):
    """The result's ``backend``: the choice and its reason (_backends.Choice), or the backend's name."""
    return choice.result() if choice is not None else {'name': backend.name}


def _run(module, backend, choice=None):
    params = module.params
    view = _doctor.View(backend=backend)
    _read_host(module, view)
    complete, unresolved = _resolve(module, view, params['forwards'])
    forwards, warnings = _routes.with_hairpin_networks(module, _parse(module, complete), view.interfaces)
    for warning in warnings:
        module.warn(warning)
    view.desired = {family: backend.desired(forwards, family) for family in _forward.FAMILIES}
    selected = [fwd for fwd in forwards if _selected(module, fwd)]
    unresolved = [item for item in unresolved if not params['guest'] or item['guest'] == params['guest']]
    if not selected and not unresolved:
        module.exit_json(changed=False, forwards=[], broken=[], table=[], matched=False, backend=_chosen(backend, choice),
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
                     backend=_chosen(backend, choice),
                     host={'flavour': {'ipv%d' % f: fam.flavour for f, fam in view.families.items()},
                           'public_ip': params['public_ip'] or '',
                           'libvirt': 'read' if view.libvirt is not None else view.libvirt_error,
                           'nftables': 'read' if view.nft is not None else view.nft_error})


def choose(module, backends):
    """(the Diagnosis of the backend this host gets, the Choice): ``backend: auto`` decides as
    kvmnet.nat.forwards does (_backends.read_choice, read only); ``backends``: {name: Diagnosis}."""
    try:
        own = backends['nftables'].table_name() if 'nftables' in backends else None
    except ValueError:
        own = None
    choice = _backends.read_choice(module, module.params.get('backend') or 'auto', own)
    backend = backends.get(choice.name) or next(iter(backends.values()))
    backend.choice = choice
    return backend, choice


def run(module, backends):
    """Everything the module does, with ``backends`` ({'iptables': Diagnosis, 'nftables': Diagnosis}, the
    firewall backends' diagnoses, iptables first): the parameters are checked (the backend's own by the first),
    then the backend is chosen and the host read. A command that fails ends it naming the command and its stderr."""
    try:
        _check_params(module, next(iter(backends.values())))
        backend, choice = choose(module, backends)
        _run(module, backend, choice)
    except _command.CommandError as exc:
        module.fail_json(msg=str(exc), cmd=exc.cmd, rc=exc.rc, stderr=exc.stderr)
    except (_routes.RouteError, RulesetError) as exc:
        module.fail_json(msg=str(exc))
