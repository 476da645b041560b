# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import ipaddress

import pytest

from ansible_collections.kvmnet.nat.plugins.module_utils import _forward
from ansible_collections.kvmnet.nat.plugins.module_utils import _listeners

# Recorded from a host with nginx on 0.0.0.0:80, sshd on [::]:22, a resolver on 127.0.0.53:53/udp,
# a service on 203.0.113.11:8443 only, and one established connection (must be ignored).
PROC_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1001 1 0
   1: 0B7100CB:20FB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1002 1 0
   2: 0A7100CB:0016 327100CB:D431 01 00000000:00000000 02:00000000 00000000     0        0 1003 4 0
"""
PROC_TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2001 1 0
"""
PROC_UDP = """\
   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  1: 3500007F:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 3001 2 0 0
"""

PUBLIC = '203.0.113.10'


def listeners():
    return (_listeners.parse_proc_net(PROC_TCP, 'tcp') + _listeners.parse_proc_net(PROC_TCP6, 'tcp')
            + _listeners.parse_proc_net(PROC_UDP, 'udp'))


def forward(host_port, proto='tcp', public_ip=PUBLIC, in_interface=None, allow=False, guest_ip='192.168.122.10'):
    raw = {'guest': 'web01', 'guest_ip': guest_ip, 'host_port': host_port, 'proto': proto,
           'allow_in_use': allow}
    if public_ip:
        raw['public_ip'] = public_ip
    return _forward.parse_forwards([raw], None, '2001:db8::10', in_interface)


def test_parse_keeps_only_listening_and_unconnected_sockets():
    assert [(item.proto, str(item.address), item.port) for item in listeners()] == [
        ('tcp', '0.0.0.0', 80), ('tcp', '203.0.113.11', 8443), ('tcp', '::', 22), ('udp', '127.0.0.53', 53)]


@pytest.mark.parametrize('case', [
    dict(id='nginx on every address, forward of :80', fwd=forward(80), taken=['tcp 0.0.0.0:80']),
    dict(id='inside a forwarded range', fwd=forward('79-81'), taken=['tcp 0.0.0.0:80']),
    dict(id='ssh on [::] also serves IPv4', fwd=forward(22), taken=['tcp [::]:22']),
    dict(id='listener on another address is safe', fwd=forward(8443), taken=[]),
    dict(id='interface-scoped forward takes every address', fwd=forward(8443, public_ip=None, in_interface='eth0'),
         taken=['tcp 203.0.113.11:8443']),
    dict(id='loopback resolver is never reached by a DNAT', fwd=forward(53, proto='udp'), taken=[]),
    dict(id='other protocol', fwd=forward(80, proto='udp'), taken=[]),
    dict(id='free port', fwd=forward(8080), taken=[]),
], ids=lambda c: c['id'])
def test_covers(case):
    assert [str(item) for item in listeners() if _listeners.covers(item, case['fwd'][0])] == case['taken']


def test_ipv4_wildcard_does_not_cover_an_ipv6_forward():
    fwd = forward(80, public_ip='2001:db8::10', guest_ip='2001:db8:122::10')[0]
    assert not _listeners.covers(_listeners.parse_proc_net(PROC_TCP, 'tcp')[0], fwd)


def test_conflict_names_forward_port_and_process(monkeypatch):
    monkeypatch.setattr(_listeners, 'name_processes',
                        lambda items: [_listeners.Listener(i.proto, i.address, i.port, i.inode, 'nginx[812]')
                                       for i in items])
    assert _listeners.conflicts(forward(80), listeners()) == [
        'forward web01 tcp/80->80: host port 80 is already served on this host by tcp 0.0.0.0:80 (nginx[812]); '
        'the DNAT would take its traffic. Use another host port, or set allow_in_use: true on this forward']


def test_allow_in_use_opts_out():
    assert _listeners.conflicts(forward(80, allow=True), listeners()) == []


def test_name_processes_reads_proc(tmp_path):
    fd = tmp_path / '4242' / 'fd'
    fd.mkdir(parents=True)
    (tmp_path / '4242' / 'comm').write_text('nginx\n')
    (fd / '3').symlink_to('socket:[1001]')
    (tmp_path / 'self').mkdir()
    named = _listeners.name_processes(_listeners.parse_proc_net(PROC_TCP, 'tcp'), proc=str(tmp_path))
    assert [item.process for item in named] == ['nginx[4242]', '']


def test_ipv6_address_decoding():
    line = ('   0: B80D0120000000000000000010000000:1F90 00000000000000000000000000000000:0000 0A '
            '00000000:00000000 00:00000000 00000000     0        0 9 1 0')
    assert _listeners.parse_proc_net('header\n' + line, 'tcp')[0].address == ipaddress.ip_address('2001:db8::10')
