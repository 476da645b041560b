# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A throwaway namespace lab for the nftables backend (see README, "Safety"), and its timing function.

    client (203.0.113.50, 2001:db8::50) --- eth0 [hv] virbr0 --- web01 (192.168.122.10, 2001:db8:122::10)
                            203.0.113.10, 2001:db8::10    `-- web02 (192.168.122.11: hairpin's client)

Namespaces ``kvnft<pid>-*`` (tests/support/topology.py), deleted by down(), also on failure; nft, ip and
sysctl run only inside them. The hypervisor gets libvirt's nftables tables (tests/support/nftsets.py).
The nftables Backend runs unchanged, through NetnsModule: AnsibleModule's run_command in the namespace.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from ansible_collections.kvmnet.nat.plugins.module_utils import _forward as F
from ansible_collections.kvmnet.nat.plugins.module_utils.nftables import backend as NB
from ansible_collections.kvmnet.nat.tests.support import nftsets
from ansible_collections.kvmnet.nat.tests.support.topology import Topology

HERE = os.path.dirname(os.path.abspath(__file__))


class NetnsModule:
    """What the backend needs of AnsibleModule, every command run in namespace ``ns``."""

    def __init__(self, ns):
        self.ns = ns

    @staticmethod
    def get_bin_path(name, required=False):
        return name

    def run_command(self, cmd, data=None, binary_data=False, environ_update=None):
        env = dict(os.environ, **(environ_update or {}))
        proc = subprocess.run(['ip', 'netns', 'exec', self.ns] + list(cmd), input=data, capture_output=True,
                              text=True, env=env, timeout=120, check=False)
        return proc.returncode, proc.stdout, proc.stderr


class NftLab(Topology):
    def __init__(self):
        super().__init__('kvnft%d' % os.getpid(), ('client', 'hv', 'web01', 'web02'))

    def up(self):
        super().up()
        try:
            self._build()
        except BaseException:
            self.down()
            raise
        return self

    def _build(self):
        self.link('hv', 'eth0', 'client', 'eth0')
        self.x('hv', 'ip', 'addr', 'add', '203.0.113.10/24', 'dev', 'eth0')
        self.x('hv', 'ip', 'addr', 'add', '2001:db8::10/64', 'dev', 'eth0', 'nodad')
        self.x('client', 'ip', 'addr', 'add', '203.0.113.50/24', 'dev', 'eth0')
        self.x('client', 'ip', 'addr', 'add', '2001:db8::50/64', 'dev', 'eth0', 'nodad')
        for role in ('hv', 'client'):
            self.x(role, 'ip', 'link', 'set', 'eth0', 'up')
        self.x('client', 'ip', 'route', 'add', '192.168.122.0/24', 'via', '203.0.113.10')
        self.x('hv', 'ip', 'link', 'add', 'virbr0', 'type', 'bridge')
        self.x('hv', 'ip', 'addr', 'add', '192.168.122.1/24', 'dev', 'virbr0')
        self.x('hv', 'ip', 'addr', 'add', '2001:db8:122::1/64', 'dev', 'virbr0', 'nodad')
        self.x('hv', 'ip', 'link', 'set', 'virbr0', 'up')
        self.link('hv', 'vnet0', 'web01', 'eth0')
        self.x('hv', 'ip', 'link', 'set', 'vnet0', 'master', 'virbr0', 'up')
        self.x('web01', 'ip', 'addr', 'add', '192.168.122.10/24', 'dev', 'eth0')
        self.x('web01', 'ip', 'addr', 'add', '2001:db8:122::10/64', 'dev', 'eth0', 'nodad')
        self.x('web01', 'ip', 'link', 'set', 'eth0', 'up')
        self.x('web01', 'ip', 'route', 'add', 'default', 'via', '192.168.122.1')
        self.x('web01', 'ip', '-6', 'route', 'add', 'default', 'via', '2001:db8:122::1')
        # a second guest on the bridge, for hairpin (a guest reaching another by the public address)
        self.link('hv', 'vnet1', 'web02', 'eth0')
        self.x('hv', 'ip', 'link', 'set', 'vnet1', 'master', 'virbr0', 'up')
        self.x('web02', 'ip', 'addr', 'add', '192.168.122.11/24', 'dev', 'eth0')
        self.x('web02', 'ip', 'link', 'set', 'eth0', 'up')
        self.x('web02', 'ip', 'route', 'add', 'default', 'via', '192.168.122.1')
        for key in ('net.ipv4.ip_forward=1', 'net.ipv6.conf.all.forwarding=1'):
            self.x('hv', 'sysctl', '-q', '-w', key)
        self.x('hv', 'nft', '-f', '-', data=nftsets.LIBVIRT)
        # neighbours known before the first probe (IPv6 neighbour discovery once timed a probe out)
        for address in ('192.168.122.10', '2001:db8:122::10', '203.0.113.50', '2001:db8::50'):
            self.x('hv', 'ping', '-c', '1', '-W', '2', address, check=False)

    def serve(self, role, name, tcp, udp):
        proc = self.spawn(role, [sys.executable, os.path.join(HERE, 'guest_server.py'), name, '--tcp'] + tcp
                          + ['--udp'] + udp + ['--ipv6'], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = proc.stdout.readline().strip()
        if line != 'ready':
            raise RuntimeError('the lab server did not start: %s' % line)
        return proc

    def probe(self, role, proto, address, port, timeout=1.5):
        return self.x(role, sys.executable, os.path.join(HERE, 'probe.py'), proto, address, str(port),
                      '--timeout', str(timeout), timeout=timeout + 10).stdout.strip()

    def backend(self, prefix='KVMNAT'):
        return NB.Engine(NetnsModule(self.ns['hv']), prefix).open('inet')

    def ruleset(self):
        """The hypervisor's ruleset as text without counters (``nft -s``): what must stay identical."""
        return self.x('hv', 'nft', '-s', 'list', 'ruleset').stdout


def timing(n, public='203.0.113.10'):
    """Seconds for render+plan, nft -c -f, nft -f, read+plan (no-op) of ``n`` plain forwards, in a
    throwaway namespace with libvirt's tables; no assertion, for the report and ``make bench``."""
    raw = [dict(guest='g%d' % (i % 250), guest_ip='192.168.%d.%d' % (122 + i // 250 % 4, 2 + i % 250),
                host_port=1024 + i, guest_port=80, proto='tcp' if i % 3 else 'udp') for i in range(n)]
    forwards = F.parse_forwards(raw, public_ip=public)
    out = {}
    with NftLab() as lab:
        backend = lab.backend()
        started = time.monotonic()
        live = backend.read()
        out['first read'] = time.monotonic() - started
        started = time.monotonic()
        desired = backend.desired(forwards)
        plan = backend.plan(live, desired)
        out['render+plan'] = time.monotonic() - started
        started = time.monotonic()
        backend.test(plan)
        out['nft -c -f'] = time.monotonic() - started
        started = time.monotonic()
        backend.apply(plan)
        out['nft -f'] = time.monotonic() - started
        started = time.monotonic()
        again = backend.read_back(desired)
        out['read back (list+parse+plan)'] = time.monotonic() - started
        out['first converge total'] = sum(out.values())
        started = time.monotonic()
        noop = backend.plan(backend.read(), backend.desired(forwards))
        out['no-op (read+render+plan)'] = time.monotonic() - started
        assert not again.changed and not noop.changed
    return out


if __name__ == '__main__':
    for count in [int(a) for a in sys.argv[1:]] or [1000, 10000]:
        print('N=%d: %s' % (count, ', '.join('%s %.3f s' % kv for kv in timing(count).items())))
