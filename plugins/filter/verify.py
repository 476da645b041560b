# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Filters of the kvmnet.nat.verify playbook: what to probe, and the table of what answered."""

from __future__ import annotations

import ipaddress

from ansible.errors import AnsibleFilterError

from ansible_collections.kvmnet.nat.plugins.module_utils import _forward


def _ports(value, where):
    try:
        return _forward.parse_ports(value)
    except ValueError as exc:
        raise AnsibleFilterError('%s: %s' % (where, exc))


def _family(guest, port):
    for value in (guest.get('ip'), port.get('public_ip')):
        if value:
            return ipaddress.ip_address(value).version
    return 4          # an address found in libvirt: IPv4


def verify_rows(exposures, hypervisor, public_ip, public_ip6=''):
    """One probe per forward (two for a range: its first and last port), at the public address of the
    forward's family; a forward with an allow-list carries it, so the probe can tell whether its
    vantage point may connect."""
    rows = []
    for guest in exposures or []:
        for port in guest.get('ports') or []:
            where = '%s %s port %s' % (hypervisor, guest.get('name'), port.get('host'))
            host = _ports(port['host'], where)
            guest_ports = _ports(port['guest'] if port.get('guest') is not None else port['host'], where)
            family = _family(guest, port)
            address = port.get('public_ip') or (public_ip6 if family == 6 else public_ip)
            if not address:
                raise AnsibleFilterError('%s: an IPv%d forward, but %s has no public IPv%d address to probe (set %s)'
                                         % (where, family, hypervisor, family,
                                            'expose_public_ip6' if family == 6 else 'expose_public_ip'))
            for host_port in sorted({host.first, host.last}):
                rows.append({
                    'hypervisor': hypervisor, 'guest': guest['name'], 'family': family,
                    'public_ip': address or '', 'proto': port.get('proto') or 'tcp',
                    'port': host_port, 'guest_port': guest_ports.first + (host_port - host.first),
                    'sources': port.get('sources') or [], 'send': port.get('send') or '',
                    'expect': port.get('expect') or '',
                })
    return rows


def verify_table(pairs):
    """From [row, probe result] pairs: {rows, lines, failed} for the report, the screen and the verdict.

    A row is reachable (yes), not (NO), not judged (? : a silent UDP port without expect), or
    restricted (a port with an allow-list that this vantage point is outside: not probed, not a failure).
    """
    rows, failed = [], []
    for row, result in pairs:
        reachable = result.get('reachable')
        restricted = result.get('attempts') == 0 and reachable is None
        rows.append(dict(row, reachable=reachable, restricted=restricted, answer=result.get('answer', ''),
                         error=result.get('error', ''), elapsed=result.get('elapsed'),
                         vantage=result.get('vantage', ''), attempts=result.get('attempts')))
        if reachable is False:
            failed.append('%s %s %s %s:%s' % (row['hypervisor'], row['guest'], row['proto'], row['public_ip'],
                                              row['port']))
    header = ('hypervisor', 'guest', 'public address -> guest port', 'reachable', 'from', 'time', 'answer')
    table = [header]
    for row in rows:
        mark = 'restricted' if row['restricted'] else {True: 'yes', False: 'NO', None: '?'}[row['reachable']]
        time_ms = '-' if row['elapsed'] is None or row['restricted'] else '%d ms' % round(row['elapsed'] * 1000)
        where = '[%s]:%s' % (row['public_ip'], row['port']) if ':' in row['public_ip'] else \
            '%s:%s' % (row['public_ip'], row['port'])
        table.append((row['hypervisor'], row['guest'], '%s %s -> %s' % (row['proto'], where, row['guest_port']),
                      mark, row['vantage'] or '-', time_ms, row['answer'] or row['error']))
    widths = [max(len(str(line[i])) for line in table) for i in range(len(header))]
    lines = ['  '.join(str(cell).ljust(width) for cell, width in zip(line, widths)).rstrip() for line in table]
    return {'rows': rows, 'lines': lines, 'failed': failed}


class FilterModule:
    def filters(self):
        return {'verify_rows': verify_rows, 'verify_table': verify_table}
