#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: probe
short_description: Connect to one address and port, as a client would, and report what answered
version_added: 1.0.0
description:
  - Opens one TCP connection (or sends one UDP datagram) from the host it runs on, reads what the
    server sends first, and reports whether the port is reachable, the answer and the time taken.
  - Used by the C(kvmnet.nat.verify) playbook from a vantage point outside the hypervisor. It never
    fails on an unreachable port; the caller decides (RV(reachable)).
author:
  - kvmnet.nat maintainers (!UNKNOWN)
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
    description:
      - Address to connect to.
      - Refused, before anything is sent, when it is an address no forward can have and a probe must not
        reach (the declarations come from an inventory the controller need not trust) - loopback,
        unspecified, multicast, link-local or the broadcast address 255.255.255.255, and their IPv6
        equivalents.
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
      - Python regular expression that must be found (C(re.search)) in the answer for the port to count
        as reachable.
      - Bounded, because it comes from the inventory - at most 256 characters, searched in the answer's
        first line cut to 512 characters, in a child process that is stopped after 1 second. A pattern
        that takes longer (a repeated group inside a repeat can take exponential time) makes the port
        not reachable, with an RV(error) that says so.
      - Without it, an accepted TCP connection or any UDP answer is enough. A UDP port that does not
        answer cannot be judged without it (silence is normal for UDP), so RV(reachable) is then V(null).
    type: str
  timeout:
    description: Seconds to wait for the connection and for the first answer, per attempt; more than 0, at most 300.
    type: float
    default: 3.0
  retry_for:
    description:
      - Try again (once a second at most) while the port does not answer, until this many seconds have
        passed since the first attempt; V(0) tries once. At most 600.
      - A port that answers is reported at once; only failures wait.
    type: float
    default: 0
  sources:
    description:
      - The forward's allow-list of source networks, if it has one. When the address this host would
        send from is outside every one of them, nothing is sent and RV(reachable) is V(null) with
        RV(error) saying the port is restricted and was not probed from here.
    type: list
    elements: str
    default: []
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
vantage:
  description: The source address this host uses towards O(host) (what a server sees, unless NAT lies between).
  returned: always
  type: str
  sample: 203.0.113.50
attempts:
  description: How many attempts were made (0 when the port was restricted and not probed).
  returned: always
  type: int
  sample: 1
"""

import ipaddress
import socket
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.kvmnet.nat.plugins.module_utils import _forward
from ansible_collections.kvmnet.nat.plugins.module_utils import _match
from ansible_collections.kvmnet.nat.plugins.module_utils._connect import probe


def vantage(host, port):
    """The source address the kernel picks towards host (a UDP socket's connect sends nothing)."""
    family = socket.AF_INET6 if ':' in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect((host, port))
        except OSError:
            return ''
        return sock.getsockname()[0]


def outside(address, sources):
    """The allow-list ``sources`` names networks and ``address`` is in none of them."""
    if not sources:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return True
    return not any(ip.version == net.version and ip in net for net in sources)


def attempt_until(deadline, once):
    """Call once() until it answers or deadline (monotonic) passes, at most once a second."""
    attempts = 0
    while True:
        started = time.monotonic()
        attempts += 1
        answer, error = once()
        if not error or time.monotonic() >= deadline:
            return answer, error, attempts
        time.sleep(max(0.0, min(1.0 - (time.monotonic() - started), deadline - time.monotonic())))


def judge(answer, expect):
    """Why ``answer`` does not count (it does not match ``expect``, or the match took too long), or ''."""
    if expect is None:
        return ''
    try:
        return '' if _match.search(expect, answer) else 'answer does not match %r' % expect
    except _match.MatchTimeout as exc:
        return str(exc)


def argument_spec():
    return dict(
        host=dict(type='str', required=True),
        port=dict(type='int', required=True),
        proto=dict(type='str', choices=['tcp', 'udp'], default='tcp'),
        send=dict(type='str', default=''),
        expect=dict(type='str'),
        timeout=dict(type='float', default=3.0),
        retry_for=dict(type='float', default=0.0),
        sources=dict(type='list', elements='str', default=[]),
    )


def _host_problem(host):
    """Why ``host`` is no address a probe goes to, or ''."""
    try:
        reason = _forward.unusable(ipaddress.ip_address(host))
    except ValueError:
        return 'host %r is not an IP address' % (host,)
    return 'host %s is %s: no forward has it, and a probe does not go there' % (host, reason) if reason else ''


def check_params(params):
    """(problems, the sources as networks, expect or None): every problem with the parameters at once."""
    problems = []
    if not 0 < params['port'] < 65536:
        problems.append('port %s is not between 1 and 65535' % params['port'])
    if not 0 < params['timeout'] <= 300:
        problems.append('timeout %s must be more than 0 and at most 300 seconds' % params['timeout'])
    if not 0 <= params['retry_for'] <= 600:
        problems.append('retry_for %s must be between 0 and 600 seconds' % params['retry_for'])
    unusable = _host_problem(params['host'])
    if unusable:
        problems.append(unusable)
    sources = []
    for text in params['sources']:
        try:
            sources.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            problems.append('source %r is not an address or network' % (text,))
    expect = params['expect'] or None
    if expect is not None and _match.problem(expect):
        problems.append('expect %r %s' % (expect, _match.problem(expect)))
    return problems, sources, expect


def run(module):
    params = module.params
    problems, sources, expect = check_params(params)
    if problems:
        module.fail_json(msg='; '.join(problems))
    source = vantage(params['host'], params['port'])
    if outside(source, sources):
        module.exit_json(changed=False, reachable=None, answer='', elapsed=0.0, vantage=source, attempts=0,
                         error='restricted to %s; not probed from here (%s)'
                               % (', '.join(params['sources']), source or 'no route'))
    start = time.monotonic()

    def once():
        answer, error = probe(params['host'], params['port'], params['proto'], params['send'], params['timeout'])
        return answer, error or judge(answer, expect)

    answer, error, attempts = attempt_until(start + params['retry_for'], once)
    elapsed = round(time.monotonic() - start, 3)
    if error == 'timeout' and params['proto'] == 'udp' and expect is None:
        reachable, error = None, 'no answer (normal for some UDP services; give expect to judge)'
    else:
        reachable = not error
    module.exit_json(changed=False, reachable=reachable, answer=answer, error=error, elapsed=elapsed,
                     vantage=source, attempts=attempts)


def main():
    run(AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True))


if __name__ == '__main__':
    main()
