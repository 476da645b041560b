# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A tiny guest service for the namespace tests.

On every TCP port given it answers one line "NAME PEER_ADDRESS LOCAL_PORT" and closes; on every UDP
port it answers each datagram with the same line. Runs until killed (the tests kill it by PID).
Usage: guest_server.py NAME --tcp 80 20000-20009 --udp 53 [--bind ADDRESS ...]
"""

from __future__ import annotations

import argparse
import socket
import threading


def ports(specs):
    result = []
    for spec in specs:
        first, _sep, last = spec.partition('-')
        result.extend(range(int(first), int(last or first) + 1))
    return result


def serve_tcp(name, family, address, port):
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind((address, port))
    sock.listen(16)
    while True:
        conn, peer = sock.accept()
        with conn:
            conn.sendall(('%s %s %d\n' % (name, peer[0], port)).encode())


def serve_udp(name, family, address, port):
    sock = socket.socket(family, socket.SOCK_DGRAM)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind((address, port))
    while True:
        _data, peer = sock.recvfrom(512)
        sock.sendto(('%s %s %d\n' % (name, peer[0], port)).encode(), peer)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('name')
    parser.add_argument('--tcp', nargs='*', default=[])
    parser.add_argument('--udp', nargs='*', default=[])
    parser.add_argument('--ipv6', action='store_true', help='also listen on IPv6')
    args = parser.parse_args()
    binds = [(socket.AF_INET, '0.0.0.0')] + ([(socket.AF_INET6, '::')] if args.ipv6 else [])
    threads = []
    for family, address in binds:
        threads += [threading.Thread(target=serve_tcp, args=(args.name, family, address, p), daemon=True)
                    for p in ports(args.tcp)]
        threads += [threading.Thread(target=serve_udp, args=(args.name, family, address, p), daemon=True)
                    for p in ports(args.udp)]
    for thread in threads:
        thread.start()
    print('ready', flush=True)
    for thread in threads:
        thread.join()


if __name__ == '__main__':
    main()
