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
                                {'host': '10000:10009', 'guest': '20000-20009'},
                                {'host': 5353, 'guest': 53, 'proto': 'udp', 'expect': '^web01 '},
                                {'host': 2222, 'guest': 22, 'sources': ['203.0.113.50/32']}]},
    {'name': 'app01', 'ports': [{'host': 8443, 'guest': 443, 'public_ip': '203.0.113.99'}]},
    {'name': 'web06', 'ip': '2001:db8:122::10', 'ports': [{'host': 8080, 'guest': 80}]},
]


def test_rows_probe_both_ends_of_a_range_at_the_address_of_each_forwards_family():
    rows = verify_rows(EXPOSURES, 'hv1', '203.0.113.11', '2001:db8::11')
    assert [(r['guest'], r['family'], r['proto'], r['public_ip'], r['port'], r['guest_port'], r['sources'],
             r['expect']) for r in rows] == [
        ('web01', 4, 'tcp', '203.0.113.11', 8080, 80, [], ''),
        ('web01', 4, 'tcp', '203.0.113.11', 10000, 20000, [], ''),      # "10000:10009", as the module takes it
        ('web01', 4, 'tcp', '203.0.113.11', 10009, 20009, [], ''),
        ('web01', 4, 'udp', '203.0.113.11', 5353, 53, [], '^web01 '),
        ('web01', 4, 'tcp', '203.0.113.11', 2222, 22, ['203.0.113.50/32'], ''),
        ('app01', 4, 'tcp', '203.0.113.99', 8443, 443, [], ''),
        ('web06', 6, 'tcp', '2001:db8::11', 8080, 80, [], ''),           # an IPv6 forward: probed at public_ip6
    ]


@pytest.mark.parametrize('exposures, public_ip6, message', [
    ([{'name': 'web01', 'ports': [{'host': 'http'}]}], '', "hv1 web01 port http: port 'http'"),
    ([{'name': 'web06', 'ip': '2001:db8:122::10', 'ports': [{'host': 80}]}], '',
     'an IPv6 forward, but hv1 has no public IPv6 address to probe (set expose_public_ip6)'),
])
def test_rows_refuse(exposures, public_ip6, message):
    with pytest.raises(AnsibleFilterError) as exc:
        verify_rows(exposures, 'hv1', '203.0.113.11', public_ip6)
    assert message in str(exc.value)


def test_table_fails_unreachable_rows_only_and_says_where_it_probed_from():
    rows = verify_rows(EXPOSURES, 'hv1', '203.0.113.11', '2001:db8::11')
    picked = [rows[0], rows[1], rows[3], rows[4], rows[6]]
    results = [{'reachable': True, 'answer': 'web01 203.0.113.50', 'error': '', 'elapsed': 0.002,
                'vantage': '203.0.113.51', 'attempts': 1},
               {'reachable': False, 'answer': '', 'error': 'timeout', 'elapsed': 10.0, 'vantage': '203.0.113.51',
                'attempts': 4},
               {'reachable': None, 'answer': '', 'error': 'no answer', 'elapsed': 3.0, 'vantage': '203.0.113.51',
                'attempts': 4},
               {'reachable': None, 'answer': '', 'error': 'restricted to 203.0.113.50/32; not probed from here '
                                                          '(203.0.113.51)', 'elapsed': 0.0, 'vantage': '203.0.113.51',
                'attempts': 0},
               {'reachable': True, 'answer': 'web06 2001:db8::51', 'error': '', 'elapsed': 0.003,
                'vantage': '2001:db8::51', 'attempts': 1}]
    report = verify_table(list(zip(picked, results)))
    assert report['failed'] == ['hv1 web01 tcp 203.0.113.11:10000']
    assert [(r['reachable'], r['restricted']) for r in report['rows']] == [
        (True, False), (False, False), (None, False), (None, True), (True, False)]
    assert report['lines'][0].split() == ['hypervisor', 'guest', 'public', 'address', '->', 'guest', 'port',
                                          'reachable', 'from', 'time', 'answer']
    assert report['lines'][1].split()[-6:] == ['yes', '203.0.113.51', '2', 'ms', 'web01', '203.0.113.50']
    assert report['lines'][2].split()[-4:] == ['NO', '203.0.113.51', '10000', 'ms', 'timeout'][-4:]
    assert 'restricted' in report['lines'][4] and 'not probed from here' in report['lines'][4]
    assert 'tcp [2001:db8::11]:8080 -> 80' in report['lines'][5]
