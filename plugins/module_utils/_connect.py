# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""One client connection, as kvmnet.nat.probe and kvmnet.nat.doctor make it: PRIVATE to this collection."""

from __future__ import annotations

import socket


def probe(host, port, proto, send, timeout):
    """Returns (answer, error)."""
    family = socket.AF_INET6 if ':' in host else socket.AF_INET
    kind = socket.SOCK_STREAM if proto == 'tcp' else socket.SOCK_DGRAM
    with socket.socket(family, kind) as sock:
        sock.settimeout(timeout)
        try:
            if proto == 'tcp':
                sock.connect((host, port))
                if send:
                    sock.sendall(send.encode())
            else:
                sock.sendto((send or 'ping').encode(), (host, port))
            try:
                data = sock.recv(512)
            except socket.timeout:
                if proto == 'tcp':
                    return '', ''      # connected; the server just says nothing first
                raise
        except ConnectionRefusedError:
            return '', 'refused'
        except socket.timeout:
            return '', 'timeout'
        except OSError as exc:
            return '', exc.strerror or str(exc)
    return data.decode(errors='replace').strip().split('\n')[0], ''
