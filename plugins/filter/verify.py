# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Filters of the kvmnet.nat.verify playbook: what to probe, and the table of what answered."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError


def _ports(value):
    text = str(value)
    first, _sep, last = text.partition('-')
    try:
        return int(first), int(last or first)
    except ValueError:
        raise AnsibleFilterError('port %r is neither a number nor a range like 10000-10009' % (value,))


def verify_rows(exposures, hypervisor, public_ip):
    """One probe per forward (two for a range: its first and last port)."""
    rows = []
    for guest in exposures or []:
        for port in guest.get('ports') or []:
            host_first, host_last = _ports(port['host'])
            guest_first, _guest_last = _ports(port.get('guest', port['host']))
            for host_port in sorted({host_first, host_last}):
                rows.append({
                    'hypervisor': hypervisor, 'guest': guest['name'],
                    'public_ip': port.get('public_ip') or public_ip, 'proto': port.get('proto', 'tcp'),
                    'port': host_port, 'guest_port': guest_first + (host_port - host_first),
                    'send': port.get('send', ''), 'expect': port.get('expect', ''),
                })
    return rows


def verify_table(pairs):
    """From [row, probe result] pairs: {rows, lines, failed} for the report, the screen and the verdict."""
    rows, failed = [], []
    for row, result in pairs:
        reachable = result.get('reachable')
        rows.append(dict(row, reachable=reachable, answer=result.get('answer', ''),
                         error=result.get('error', ''), elapsed=result.get('elapsed')))
        if reachable is False:
            failed.append('%s %s %s %s:%s' % (row['hypervisor'], row['guest'], row['proto'], row['public_ip'],
                                              row['port']))
    header = ('hypervisor', 'guest', 'public address -> guest port', 'reachable', 'time', 'answer')
    table = [header]
    for row in rows:
        mark = {True: 'yes', False: 'NO', None: '?'}[row['reachable']]
        time_ms = '-' if row['elapsed'] is None else '%d ms' % round(row['elapsed'] * 1000)
        table.append((row['hypervisor'], row['guest'],
                      '%s %s:%s -> %s' % (row['proto'], row['public_ip'], row['port'], row['guest_port']),
                      mark, time_ms, row['answer'] or row['error']))
    widths = [max(len(str(line[i])) for line in table) for i in range(len(header))]
    lines = ['  '.join(str(cell).ljust(width) for cell, width in zip(line, widths)).rstrip() for line in table]
    return {'rows': rows, 'lines': lines, 'failed': failed}


class FilterModule:
    def filters(self):
        return {'verify_rows': verify_rows, 'verify_table': verify_table}
