# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A throwaway network-namespace lab for the forwards module (see README, "Safety").

    client (203.0.113.50, .51; 2001:db8::50) --- eth0 [hypervisor] virbr0 --- web01 (192.168.122.10)
                                  203.0.113.10 (public), .11 (host's own)   \\-- dns01 (192.168.122.11)

Everything lives in namespaces named ``kvt<pid>-*`` that this module creates and deletes; every
command that touches netfilter, routes or sysctls runs inside them via ``ip netns exec``. Nothing
here has a route out of the lab. The hypervisor gets libvirt 9's filter/nat chains reproduced
(LIBVIRT_FWI/FWO/FWX with their REJECTs, LIBVIRT_PRT), a host service on :80 and an admin rule.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

import jinja2

from ansible_collections.kvmnet.nat.tests.support.topology import Topology, TopologyError

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
TEMPLATES = os.path.join(REPO, 'roles', 'expose', 'templates')
PUBLIC_IP = '203.0.113.10'
HOST_OWN_IP = '203.0.113.11'
PUBLIC_IP6 = '2001:db8::10'
CLIENT_IP = '203.0.113.50'
CLIENT_IP_2 = '203.0.113.51'
BRIDGE_IP = '192.168.122.1'
GUESTS = {
    # name: (ipv4, ipv6, tcp ports, udp ports)
    'web01': ('192.168.122.10', '2001:db8:122::10', ['22', '80', '81', '443', '20000-20009'], []),
    'dns01': ('192.168.122.11', '2001:db8:122::11', ['80'], ['53']),
}

LIBVIRT_RULES = """*filter
:LIBVIRT_FWI - [0:0]
:LIBVIRT_FWO - [0:0]
:LIBVIRT_FWX - [0:0]
:LIBVIRT_INP - [0:0]
:LIBVIRT_OUT - [0:0]
-A INPUT -j LIBVIRT_INP
-A FORWARD -j LIBVIRT_FWX
-A FORWARD -j LIBVIRT_FWI
-A FORWARD -j LIBVIRT_FWO
-A OUTPUT -j LIBVIRT_OUT
-A LIBVIRT_FWI -d 192.168.122.0/24 -o virbr0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A LIBVIRT_FWI -o virbr0 -j REJECT --reject-with icmp-port-unreachable
-A LIBVIRT_FWO -s 192.168.122.0/24 -i virbr0 -j ACCEPT
-A LIBVIRT_FWO -i virbr0 -j REJECT --reject-with icmp-port-unreachable
-A LIBVIRT_FWX -i virbr0 -o virbr0 -j ACCEPT
-A LIBVIRT_INP -i virbr0 -p udp -m udp --dport 53 -j ACCEPT
-A LIBVIRT_INP -i virbr0 -p udp -m udp --dport 67 -j ACCEPT
-A LIBVIRT_OUT -o virbr0 -p udp -m udp --dport 68 -j ACCEPT
-A INPUT -s 192.0.2.99/32 -m comment --comment "admin: block a scanner" -j DROP
COMMIT
*nat
:LIBVIRT_PRT - [0:0]
-A POSTROUTING -j LIBVIRT_PRT
-A LIBVIRT_PRT -s 192.168.122.0/24 -d 224.0.0.0/24 -j RETURN
-A LIBVIRT_PRT -s 192.168.122.0/24 ! -d 192.168.122.0/24 -p tcp -j MASQUERADE --to-ports 1024-65535
-A LIBVIRT_PRT -s 192.168.122.0/24 ! -d 192.168.122.0/24 -j MASQUERADE
COMMIT
"""

LIBVIRT_RULES6 = """*filter
:LIBVIRT_FWI - [0:0]
:LIBVIRT_FWO - [0:0]
:LIBVIRT_FWX - [0:0]
-A FORWARD -j LIBVIRT_FWX
-A FORWARD -j LIBVIRT_FWI
-A FORWARD -j LIBVIRT_FWO
-A LIBVIRT_FWI -d 2001:db8:122::/64 -o virbr0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A LIBVIRT_FWI -o virbr0 -j REJECT --reject-with icmp6-port-unreachable
-A LIBVIRT_FWO -s 2001:db8:122::/64 -i virbr0 -j ACCEPT
-A LIBVIRT_FWO -i virbr0 -j REJECT --reject-with icmp6-port-unreachable
-A LIBVIRT_FWX -i virbr0 -o virbr0 -j ACCEPT
COMMIT
"""


LabError = TopologyError


class Lab(Topology):
    """Build with up(), always tear down with down() (the fixture does, also on failure)."""

    def __init__(self, flavour='nft', collections_path=None):
        super().__init__('kvt%d%s' % (os.getpid(), flavour[0]), ('client', 'hv', 'web01', 'dns01'))
        self.flavour = flavour
        self.collections_path = collections_path or os.environ.get('ANSIBLE_COLLECTIONS_PATH', '')
        self.tmp = None
        self.lock_path = None

    # ------------------------------------------------------------ plumbing
    def ipt(self, family=4):
        return '%s-%s' % ('iptables' if family == 4 else 'ip6tables', self.flavour)

    def save(self, family=4):
        """iptables-save of the hypervisor without timestamp comments and policy counters."""
        out = self.x('hv', self.ipt(family) + '-save').stdout
        lines = [re.sub(r'\[\d+:\d+\]$', '[0:0]', line) for line in out.splitlines() if not line.startswith('#')]
        return '\n'.join(lines) + '\n'

    def up(self):
        super().up()
        try:
            self.tmp = tempfile.mkdtemp(prefix='%s-' % self.tag)
            self.lock_path = os.path.join(self.tmp, 'kvmnet-nat.lock')
            self._build()
        except BaseException:
            self.down()
            raise
        return self

    def _build(self):
        # public side: client <-> hv eth0
        self.link('hv', 'eth0', 'client', 'eth0')
        for addr in (PUBLIC_IP + '/24', HOST_OWN_IP + '/24'):
            self.x('hv', 'ip', 'addr', 'add', addr, 'dev', 'eth0')
        self.x('hv', 'ip', 'addr', 'add', PUBLIC_IP6 + '/64', 'dev', 'eth0', 'nodad')
        for addr in (CLIENT_IP + '/24', CLIENT_IP_2 + '/24'):
            self.x('client', 'ip', 'addr', 'add', addr, 'dev', 'eth0')
        self.x('client', 'ip', 'addr', 'add', '2001:db8::50/64', 'dev', 'eth0', 'nodad')
        for role in ('hv', 'client'):
            self.x(role, 'ip', 'link', 'set', 'eth0', 'up')
        # a client that also tries to reach the guest network directly, past the DNAT
        self.x('client', 'ip', 'route', 'add', '192.168.122.0/24', 'via', PUBLIC_IP)
        self.x('client', 'ip', '-6', 'route', 'add', '2001:db8:122::/64', 'via', PUBLIC_IP6)
        # guest side: bridge virbr0 in hv, one veth per guest
        self.x('hv', 'ip', 'link', 'add', 'virbr0', 'type', 'bridge')
        self.x('hv', 'ip', 'addr', 'add', BRIDGE_IP + '/24', 'dev', 'virbr0')
        self.x('hv', 'ip', 'addr', 'add', '2001:db8:122::1/64', 'dev', 'virbr0', 'nodad')
        self.x('hv', 'ip', 'link', 'set', 'virbr0', 'up')
        for guest, (ip4, ip6, _tcp, _udp) in GUESTS.items():
            self.link('hv', 'vnet-' + guest, guest, 'eth0')
            self.x('hv', 'ip', 'link', 'set', 'vnet-' + guest, 'master', 'virbr0', 'up')
            self.x(guest, 'ip', 'addr', 'add', ip4 + '/24', 'dev', 'eth0')
            self.x(guest, 'ip', 'addr', 'add', ip6 + '/64', 'dev', 'eth0', 'nodad')
            self.x(guest, 'ip', 'link', 'set', 'eth0', 'up')
            self.x(guest, 'ip', 'route', 'add', 'default', 'via', BRIDGE_IP)
            self.x(guest, 'ip', '-6', 'route', 'add', 'default', 'via', '2001:db8:122::1')
        for key in ('net.ipv4.ip_forward=1', 'net.ipv6.conf.all.forwarding=1'):
            self.x('hv', 'sysctl', '-q', '-w', key)
        # libvirt's default: bridged packets skip iptables (br_netfilter, when loaded, is per namespace)
        if self.x('hv', 'test', '-e', '/proc/sys/net/bridge/bridge-nf-call-iptables', check=False).returncode == 0:
            self.x('hv', 'sysctl', '-q', '-w', 'net.bridge.bridge-nf-call-iptables=0',
                   'net.bridge.bridge-nf-call-ip6tables=0')
        # libvirt's rules (and an admin's INPUT rule) in the flavour under test
        self.x('hv', self.ipt(4) + '-restore', '--noflush', data=LIBVIRT_RULES)
        self.x('hv', self.ipt(6) + '-restore', '--noflush', data=LIBVIRT_RULES6)
        # services: guests, and the host's own web server on :80 (the classic nginx case)
        self.servers = {guest: self.serve(guest, guest, ['--tcp'] + tcp + ['--udp'] + (udp or []) + ['--ipv6'])
                        for guest, (_ip4, _ip6, tcp, udp) in GUESTS.items()}
        self.servers['hv'] = self.serve('hv', 'host', ['--tcp', '80', '--udp'])
        for proc in self.servers.values():
            self.ready(proc)

    @staticmethod
    def ready(proc):
        line = proc.stdout.readline().strip()
        if line != 'ready':
            raise LabError('a lab server did not start: %s %s' % (line, proc.stderr.read()))

    def stop_guest_service(self, guest):
        """Stop a guest's server (started by this lab, stopped by its PID)."""
        proc = self.servers.pop(guest)
        proc.terminate()
        proc.wait(timeout=5)

    def start_guest_service(self, guest):
        _ip4, _ip6, tcp, udp = GUESTS[guest]
        self.servers[guest] = self.serve(guest, guest, ['--tcp'] + tcp + ['--udp'] + (udp or []) + ['--ipv6'])
        self.ready(self.servers[guest])

    def serve(self, role, name, args):
        return self.spawn(role, [sys.executable, os.path.join(HERE, 'guest_server.py'), name] + args,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def down(self):
        try:
            super().down()
        finally:
            if self.tmp:
                shutil.rmtree(self.tmp, ignore_errors=True)
                self.tmp = None

    # ------------------------------------------------------------ what the tests use
    def probe(self, proto, address, port, source=None, timeout=1.5, role='client'):
        cmd = [sys.executable, os.path.join(HERE, 'probe.py'), proto, address, str(port),
               '--timeout', str(timeout)]
        if source:
            cmd += ['--source', source]
        return self.x(role, *cmd, timeout=timeout + 10).stdout.strip()

    def module_cmd(self, params, check=False, diff=False, name='forwards'):
        """The command that runs a module of the collection (kvmnet.nat.forwards unless named) once in the
        hypervisor namespace, and its argument file.

        The module runs as Ansible runs it on a host (AnsibleModule reads its arguments from the file),
        without a playbook around it. Unless given, the forwards module's lock_path is this lab's own
        (never /run on this machine). The doctor runs with a PATH that hides virsh and systemctl: this
        machine's libvirt and firewalld are not the lab's.
        """
        args = dict(params)
        if name == 'forwards':
            args.setdefault('lock_path', self.lock_path)
        args.update(_ansible_check_mode=check, _ansible_diff=diff)
        handle, path = tempfile.mkstemp(prefix='args-', suffix='.json', dir=self.tmp)
        with os.fdopen(handle, 'w') as out:
            json.dump({'ANSIBLE_MODULE_ARGS': args}, out)
        code = 'from ansible_collections.kvmnet.nat.plugins.modules.%s import main; main()' % name
        env = ['PYTHONPATH=' + self.collections_path]
        if name == 'doctor':
            env.append('PATH=%s:/usr/sbin:/sbin' % self.tools_dir())
        return ['ip', 'netns', 'exec', self.ns['hv'], 'env'] + env + [sys.executable, '-c', code, path]

    def tools_dir(self):
        """A directory holding only ``ip``: with /usr/sbin, the doctor's PATH in the lab."""
        path = os.path.join(self.tmp, 'bin')
        if not os.path.isdir(path):
            os.mkdir(path)
            os.symlink(shutil.which('ip'), os.path.join(path, 'ip'))
        return path

    def module(self, params, check=False, diff=False, name='forwards'):
        """Run a module inside the hypervisor namespace; returns its result (failed or not)."""
        proc = subprocess.run(self.module_cmd(params, check, diff, name), capture_output=True, text=True, timeout=120,
                              check=False)
        return self.result(proc.returncode, proc.stdout, proc.stderr)

    @staticmethod
    def result(rc, stdout, stderr):
        try:
            return json.loads(stdout)
        except ValueError:
            raise LabError('the module printed no result: rc=%d\n%s\n%s' % (rc, stdout, stderr)) from None

    def script(self, template, **variables):
        """A shell helper of the role, rendered with the role's variables (or the ones given), in this lab's tmp."""
        defaults = {'__expose_rules_base': '/etc/iptables/kvmnet-nat', '__expose_lock_path': self.lock_path,
                    '__expose_restore_script': '/usr/local/sbin/kvmnet-nat-restore',
                    # kvmnet-nat-restore imports the module_utils of the collection under test
                    '__expose_restore_lib': self.collections_path,
                    'expose_libvirt_uri': 'qemu:///system', '__expose_libvirt_units': ['libvirtd.service'],
                    '__expose_syslog': False}     # the tests never write to this machine's syslog
        defaults.update(variables)
        environment = jinja2.Environment(keep_trailing_newline=True)
        environment.filters['to_json'] = json.dumps     # as Ansible's
        environment.filters['bool'] = bool
        environment.filters['quote'] = shlex.quote
        with open(os.path.join(TEMPLATES, template)) as handle:
            text = environment.from_string(handle.read()).render(**defaults)
        path = os.path.join(self.tmp, template.replace('.sh.j2', '').replace('.j2', ''))
        with open(path, 'w') as handle:
            handle.write(text)
        os.chmod(path, 0o755)
        return path

    def restore_script(self, **variables):
        """kvmnet-nat-restore as the role installs it: the shell wrapper, rendered with the role's variables
        (or the ones given), running the role's Python entry point on the collection under test."""
        entry = os.path.join(os.path.dirname(TEMPLATES), 'files', 'kvmnet_nat_restore.py')
        return self.script('kvmnet-nat-restore.sh.j2', __expose_restore_entry=entry,
                           __expose_restore_python='/usr/bin/python3', **variables)

    def settle(self):
        """Give conntrack a moment; used between rule changes and probes."""
        time.sleep(0.2)
