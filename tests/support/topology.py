# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The one way tests and benchmarks build throwaway network namespaces (see README, "Safety").

A Topology is a set of namespaces named ``<tag>-<role>`` that it creates and deletes, veth links
between them, and the processes it started in them (killed by PID). Every command that touches
netfilter, routes or sysctls runs inside them via ``ip netns exec``; nothing here touches the
machine's own namespace. Use it as a context manager, or call down() in a finally: it removes
everything, also after a failure half-way through up(). What one process builds another can remove:
Topology.existing(tag, roles, pids) finds the namespaces by name and stops the recorded processes
(the lab: ``lab.py up``, later ``lab.py down``).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import time

NETNS_DIR = '/run/netns'


class TopologyError(Exception):
    pass


def sh(*cmd, check=True, data=None, timeout=60):
    proc = subprocess.run(list(cmd), input=data, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise TopologyError('%s failed (rc=%d): %s' % (' '.join(cmd), proc.returncode, proc.stderr.strip()))
    return proc


class Topology:
    def __init__(self, tag, roles):
        self.tag = tag
        self.ns = {role: '%s-%s' % (tag, role) for role in roles}
        self.created = []
        self.procs = []
        self.pids = []

    @classmethod
    def existing(cls, tag, roles, pids=()):
        """What another process built with ``cls(tag, roles)``, for down(): those of its namespaces that
        still exist, and the processes it started there, by PID (``spawn(...).pid``). down() stops a
        PID only while it runs in one of these namespaces, so a PID reused since is left alone."""
        topo = cls(tag, roles)
        topo.created = [name for name in topo.ns.values() if os.path.exists(os.path.join(NETNS_DIR, name))]
        topo.pids = [pid for pid in pids if pid]
        return topo

    def up(self):
        if os.geteuid() != 0:
            raise TopologyError('network namespaces need root')
        try:
            for name in self.ns.values():
                sh('ip', 'netns', 'add', name)
                self.created.append(name)
                sh('ip', 'netns', 'exec', name, 'ip', 'link', 'set', 'lo', 'up')
        except BaseException:
            self.down()
            raise
        return self

    def __enter__(self):
        return self.up()

    def __exit__(self, *exc):
        self.down()

    def x(self, role, *cmd, **kw):
        """Run a command (an argument list) in the namespace of ``role``."""
        return sh('ip', 'netns', 'exec', self.ns[role], *cmd, **kw)

    def run(self, role, command, **kw):
        """Run a command line (split like a shell would, never through one) in ``role``."""
        return self.x(role, *shlex.split(command), **kw)

    def link(self, role_a, name_a, role_b, name_b):
        """A veth pair: ``name_a`` in ``role_a``'s namespace, ``name_b`` in ``role_b``'s."""
        sh('ip', 'link', 'add', name_a, 'netns', self.ns[role_a], 'type', 'veth', 'peer', 'name', name_b,
           'netns', self.ns[role_b])

    def spawn(self, role, argv, **popen_kw):
        """Start a process in ``role``'s namespace; down() stops it by its PID."""
        popen_kw.setdefault('stdout', subprocess.DEVNULL)
        popen_kw.setdefault('stderr', subprocess.DEVNULL)
        # pylint: disable-next=consider-using-with  # stopped by down()
        proc = subprocess.Popen(['ip', 'netns', 'exec', self.ns[role]] + list(argv), **popen_kw)
        self.procs.append(proc)
        return proc

    def down(self):
        errors = []
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
        self.procs = []
        ours = {_namespace(os.path.join(NETNS_DIR, name)) for name in self.created} - {None}
        for pid in self.pids:
            if _namespace('/proc/%d/ns/net' % pid) in ours and not _stop(pid):
                errors.append('process %d: still runs after SIGKILL' % pid)
        self.pids = []
        for name in reversed(self.created):
            result = sh('ip', 'netns', 'del', name, check=False)
            if result.returncode != 0:
                errors.append('%s: %s' % (name, result.stderr.strip()))
        self.created = []
        if errors:
            raise TopologyError('not removed: ' + '; '.join(errors))


def _namespace(path):
    """The namespace a /run/netns entry or a /proc/PID/ns link names, as (device, inode); None if gone."""
    try:
        ns = os.stat(path)
    except OSError:
        return None
    return ns.st_dev, ns.st_ino


def _running(pid):
    """Whether PID runs: neither gone nor a zombie (reaped here when it is this process's child)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        with open('/proc/%d/stat' % pid) as stat:
            return stat.read().rsplit(') ', 1)[1][0] != 'Z'
    except OSError:
        return False


def _stop(pid, timeout=5):
    """SIGTERM, SIGKILL after ``timeout`` s, as down() stops its own processes; False if PID still runs."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while _running(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not _running(pid):
            return True
    return False
