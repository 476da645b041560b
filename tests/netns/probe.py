# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Client side of the namespace tests: one bounded connection attempt.

Usage: probe.py tcp|udp ADDRESS PORT [--source ADDRESS] [--timeout SECONDS]
Prints the server's line, or REFUSED / TIMEOUT / ERROR <reason>; always exits 0.
"""

from __future__ import annotations

import argparse
import socket


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('proto', choices=['tcp', 'udp'])
    parser.add_argument('address')
    parser.add_argument('port', type=int)
    parser.add_argument('--source')
    parser.add_argument('--timeout', type=float, default=2.0)
    args = parser.parse_args()
    family = socket.AF_INET6 if ':' in args.address else socket.AF_INET
    kind = socket.SOCK_STREAM if args.proto == 'tcp' else socket.SOCK_DGRAM
    sock = socket.socket(family, kind)
    sock.settimeout(args.timeout)
    try:
        if args.source:
            sock.bind((args.source, 0))
        if args.proto == 'tcp':
            sock.connect((args.address, args.port))
            data = sock.recv(512)
        else:
            sock.sendto(b'ping', (args.address, args.port))
            data = sock.recv(512)
        print(data.decode().strip() or 'EMPTY')
    except ConnectionRefusedError:
        print('REFUSED')
    except socket.timeout:
        print('TIMEOUT')
    except OSError as exc:
        print('ERROR %s' % exc.strerror)
    finally:
        sock.close()


if __name__ == '__main__':
    main()
