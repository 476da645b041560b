# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.kvmnet.nat.plugins.filter.verify import verify_rows, verify_table

EXPOSURES = [
    {'name': 'web01', 'ports': [{'host': 8080, 'guest': 80},
                                {'host': '10000-10009', 'guest': '20000-20009'},
                                {'host': 5353, 'guest': 53, 'proto': 'udp', 'expect': '^web01 '}]},
    {'name': 'app01', 'ports': [{'host': 8443, 'guest': 443, 'public_ip': '203.0.113.99'}]},
]


def test_rows_probe_both_ends_of_a_range_and_keep_per_port_addresses():
    rows = verify_rows(EXPOSURES, 'hv1', '203.0.113.11')
    assert [(r['guest'], r['proto'], r['public_ip'], r['port'], r['guest_port'], r['expect']) for r in rows] == [
        ('web01', 'tcp', '203.0.113.11', 8080, 80, ''),
        ('web01', 'tcp', '203.0.113.11', 10000, 20000, ''),
        ('web01', 'tcp', '203.0.113.11', 10009, 20009, ''),
        ('web01', 'udp', '203.0.113.11', 5353, 53, '^web01 '),
        ('app01', 'tcp', '203.0.113.99', 8443, 443, ''),
    ]


def test_rows_reject_a_bad_port():
    with pytest.raises(AnsibleFilterError, match="port 'http'"):
        verify_rows([{'name': 'web01', 'ports': [{'host': 'http'}]}], 'hv1', '203.0.113.11')


def test_table_fails_unreachable_rows_only():
    rows = verify_rows(EXPOSURES, 'hv1', '203.0.113.11')[:3]
    results = [{'reachable': True, 'answer': 'web01 203.0.113.50', 'error': '', 'elapsed': 0.002},
               {'reachable': False, 'answer': '', 'error': 'timeout', 'elapsed': 3.0},
               {'reachable': None, 'answer': '', 'error': 'no answer', 'elapsed': 3.0}]
    report = verify_table(list(zip(rows, results)))
    assert report['failed'] == ['hv1 web01 tcp 203.0.113.11:10000']
    assert [r['reachable'] for r in report['rows']] == [True, False, None]
    assert report['lines'][0].split() == ['hypervisor', 'guest', 'public', 'address', '->', 'guest', 'port',
                                          'reachable', 'time', 'answer']
    assert report['lines'][1].split()[-5:] == ['yes', '2', 'ms', 'web01', '203.0.113.50']
    assert report['lines'][2].split()[-4:] == ['NO', '3000', 'ms', 'timeout']
