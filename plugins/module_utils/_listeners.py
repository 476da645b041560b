# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Host listeners that a forward would silently take over: PRIVATE to this collection.

A DNAT on the public address (or on every address of an interface) takes all traffic to its
port before any local socket sees it: the classic case is nginx on 0.0.0.0:80 going dark.
This reads the host's sockets from /proc/net (no ``ss`` needed) and names their processes.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass

TCP_LISTEN = '0A'
UDP_UNCONNECTED = '07'


@dataclass(frozen=True)
class Listener:
    proto: str
    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    port: int
    inode: str
    process: str = ''

    def __str__(self):
        where = '%s:%d' % (self.address, self.port) if self.address.version == 4 else '[%s]:%d' % (self.address, self.port)
        return '%s %s%s' % (self.proto, where, ' (%s)' % self.process if self.process else '')


def _address(hexaddr):
    raw = bytes.fromhex(hexaddr)
    if len(raw) == 4:
        return ipaddress.IPv4Address(raw[::-1])
    # /proc/net/*6 prints four host-order 32-bit words
    return ipaddress.IPv6Address(b''.join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))


def parse_proc_net(text, proto):
    """Listening (tcp) or bound, unconnected (udp) sockets of one /proc/net table."""
    wanted = TCP_LISTEN if proto == 'tcp' else UDP_UNCONNECTED
    result = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or fields[3] != wanted:
            continue
        host, port = fields[1].split(':')
        result.append(Listener(proto, _address(host), int(port, 16), fields[9]))
    return result


def covers(listener, fwd):
    """Would this forward's DNAT take the listener's traffic?"""
    if listener.proto != fwd.proto or not fwd.host_ports.first <= listener.port <= fwd.host_ports.last:
        return False
    if listener.address.is_loopback:
        return False    # PREROUTING never sees loopback traffic; OUTPUT matches only fwd.public_ip
    if listener.address.is_unspecified:
        # 0.0.0.0 serves IPv4 only; [::] usually serves both (bindv6only=0)
        return listener.address.version == fwd.family or listener.address.version == 6
    return fwd.public_ip is None or listener.address == fwd.public_ip


def read_listeners(proc='/proc'):
    listeners = []
    for proto in ('tcp', 'udp'):
        for suffix in ('', '6'):
            try:
                with open(os.path.join(proc, 'net', proto + suffix)) as handle:
                    listeners.extend(parse_proc_net(handle.read(), proto))
            except FileNotFoundError:
                continue
    return listeners


def name_processes(listeners, proc='/proc'):
    """Fill in 'name[pid]' for each listener whose socket inode a process holds."""
    wanted = {'socket:[%s]' % item.inode: item for item in listeners}
    names = {}
    for pid in filter(str.isdigit, os.listdir(proc)):
        fd_dir = os.path.join(proc, pid, 'fd')
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(os.path.join(fd_dir, fd))
            except OSError:
                continue
            if target in wanted and target not in names:
                try:
                    with open(os.path.join(proc, pid, 'comm')) as handle:
                        names[target] = '%s[%s]' % (handle.read().strip(), pid)
                except OSError:
                    names[target] = 'pid %s' % pid
    return [Listener(item.proto, item.address, item.port, item.inode, names.get('socket:[%s]' % item.inode, ''))
            for item in listeners]


def conflicts(forwards, listeners):
    """Error lines for every forward that would take over a host listener, unless allowed."""
    errors = []
    for fwd in forwards:
        if fwd.allow_in_use:
            continue
        hit = [item for item in listeners if covers(item, fwd)]
        if hit:
            hit = name_processes(hit)
            errors.append('forward %s: host port %s is already served on this host by %s; the DNAT would take '
                          'its traffic. Use another host port, or set allow_in_use: true on this forward'
                          % (fwd.label, fwd.host_ports, ', '.join(sorted(set(str(h) for h in hit)))))
    return errors
