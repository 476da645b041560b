#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: probe
short_description: Connect to one address and port, as a client would, and report what answered
version_added: 0.1.0
description:
  - Opens one TCP connection (or sends one UDP datagram) from the host it runs on, reads what the
    server sends first, and reports whether the port is reachable, the answer and the time taken.
  - Used by the C(kvmnet.nat.verify) playbook from a vantage point outside the hypervisor. It never
    fails on an unreachable port; the caller decides (RV(reachable)).
author:
  - kvmnet.nat maintainers (@kvmnet)
attributes:
  check_mode:
    support: full
    description: A probe changes nothing, so it also runs in check mode.
  diff_mode:
    support: none
    description: Nothing changes.
  platform:
    platforms: posix
    support: full
    description: Any host with Python.
options:
  host:
    description: Address to connect to.
    type: str
    required: true
  port:
    description: Port to connect to.
    type: int
    required: true
  proto:
    description: Protocol.
    type: str
    choices: [tcp, udp]
    default: tcp
  send:
    description:
      - Bytes (text) to send after connecting. For UDP a datagram is always sent, V(ping) when empty.
    type: str
    default: ""
  expect:
    description:
      - Regular expression the answer must match for the port to count as reachable.
      - Without it, an accepted TCP connection or any UDP answer is enough. A UDP port that does not
        answer cannot be judged without it (silence is normal for UDP), so RV(reachable) is then V(null).
    type: str
  timeout:
    description: Seconds to wait for the connection and for the first answer.
    type: float
    default: 3.0
"""

EXAMPLES = r"""
- name: Is web01's port open from here?
  kvmnet.nat.probe:
    host: 203.0.113.10
    port: 8080
  register: web01

- name: A UDP service that answers
  kvmnet.nat.probe:
    host: 203.0.113.10
    port: 5353
    proto: udp
    send: ping
    expect: "^web01 "
"""

RETURN = r"""
reachable:
  description: V(true) if the port answered (and matched O(expect)), V(false) if not, V(null) for a silent UDP port without O(expect).
  returned: always
  type: bool
  sample: true
answer:
  description: The first line the server sent, if any.
  returned: always
  type: str
  sample: web01 203.0.113.50
error:
  description: Why the port is not reachable (V(refused), V(timeout), or the socket error).
  returned: always
  type: str
  sample: refused
elapsed:
  description: Seconds from the first packet to the answer or the failure.
  returned: always
  type: float
  sample: 0.012
"""

import re
import socket
import time

from ansible.module_utils.basic import AnsibleModule


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


def main():
    module = AnsibleModule(argument_spec=dict(
        host=dict(type='str', required=True),
        port=dict(type='int', required=True),
        proto=dict(type='str', choices=['tcp', 'udp'], default='tcp'),
        send=dict(type='str', default=''),
        expect=dict(type='str'),
        timeout=dict(type='float', default=3.0),
    ), supports_check_mode=True)
    params = module.params
    if not 0 < params['port'] < 65536:
        module.fail_json(msg='port %s is not between 1 and 65535' % params['port'])
    try:
        expect = re.compile(params['expect']) if params['expect'] else None
    except re.error as exc:
        module.fail_json(msg='expect %r is not a regular expression: %s' % (params['expect'], exc))
    start = time.monotonic()
    answer, error = probe(params['host'], params['port'], params['proto'], params['send'], params['timeout'])
    elapsed = round(time.monotonic() - start, 3)
    if error == 'timeout' and params['proto'] == 'udp' and expect is None:
        reachable, error = None, 'no answer (normal for some UDP services; give expect to judge)'
    elif error:
        reachable = False
    elif expect is not None:
        reachable = bool(expect.search(answer))
        if not reachable:
            error = 'answer does not match %r' % params['expect']
    else:
        reachable = True
    module.exit_json(changed=False, reachable=reachable, answer=answer, error=error, elapsed=elapsed)


if __name__ == '__main__':
    main()
