# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Trust boundaries and failure modes of the restore path, against real netfilter (issue 19).

* the libvirt hook never fails and never hangs: whatever goes wrong in kvmnet-nat-restore, it logs
  (a stand-in ``logger`` records what would go to the journal) and exits 0 within a bounded time;
* a saved file that cannot be written never outlives the rules it describes: with the directory
  mounted read-only (in a private mount namespace) the module fails and applies nothing, and the hook
  brings no closed port back;
* the lock is a regular file or nothing, for the module and the script alike.

Needs root; everything happens in the lab's namespaces (see netlab.py), the read-only mount in a mount
namespace of its own (``unshare -m``), never in this machine's.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

from ansible_collections.kvmnet.nat.tests.support.topology import sh

from netlab import CLIENT_IP, PUBLIC_IP

LOCK_WAIT = 2          # the hook's lock wait in these tests (the role's default: 20 s)
LIMIT = 6              # the hook's hard time limit in these tests (the role's default: 60 s)
BOUND = LIMIT + 5 + 4  # the longest a hook may take: the limit, the grace before SIGKILL, slack


def fwd(port, guest_port):
    return {'guest': 'web01', 'guest_ip': '192.168.122.10', 'host_port': port, 'guest_port': guest_port}


BOTH = {'public_ip': PUBLIC_IP, 'forwards': [fwd(8080, 80), fwd(2222, 22)]}


@pytest.fixture
def applied(lab, tmp_path):
    etc = tmp_path / 'etc'
    etc.mkdir()
    lab.base = str(etc / 'kvmnet-nat')
    result = lab.module(dict(BOTH, persist_path=lab.base))
    assert not result.get('failed'), result.get('msg')
    yield result
    lab.module({'state': 'absent'})


def tools(lab, tmp_path, only=None):
    """A PATH whose ``logger`` records its arguments; with ``only``, nothing but those commands (and logger)."""
    bindir = tmp_path / 'bin'
    bindir.mkdir(exist_ok=True)
    log = tmp_path / 'journal'
    (bindir / 'logger').write_text('#!/bin/sh\nprintf "%%s\\n" "$*" >>%s\n' % log)
    (bindir / 'logger').chmod(0o755)
    if only is None:
        return '%s:%s' % (bindir, os.environ['PATH']), log
    for name in only:
        real = shutil.which(name)
        if real:
            (bindir / name).symlink_to(real)
    return str(bindir), log


SCRIPT_TOOLS = ['sh', 'env', 'sleep']      # the hook finds timeout, tr and tail in /usr/bin whatever PATH it gets


def hook(lab, tmp_path, path, lock=None, library=None):
    """Run the hook as libvirt does for a guest's port (the XML pipe left open and never written to):
    (exit status, seconds taken, stderr)."""
    restore = lab.restore_script(__expose_rules_base=lab.base, __expose_lock_path=lock or lab.lock_path,
                                 **({'__expose_restore_lib': library} if library else {}))
    script = lab.script('libvirt-network-hook.sh.j2', __expose_restore_script=restore, __expose_syslog=True,
                        __expose_hook_lock_timeout=LOCK_WAIT, __expose_hook_timeout=LIMIT)
    err = tmp_path / 'hook.err'
    start = time.monotonic()
    with open(str(err), 'w') as errors:
        # pylint: disable-next=consider-using-with  # waited for below, killed on timeout
        proc = subprocess.Popen(['ip', 'netns', 'exec', lab.ns['hv'], 'env', 'PATH=' + path, 'sh', script,
                                 'default', 'port-created', 'begin', '-'],
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errors)
        try:
            rc = proc.wait(timeout=BOUND + 30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            rc = 'hung'
        finally:
            proc.stdin.close()
    return rc, time.monotonic() - start, err.read_text()


def _with_sum(text, body):
    first, meta = text.splitlines()[:2]
    meta = meta.rsplit('sha256=', 1)[0] + 'sha256=' + hashlib.sha256(body.encode()).hexdigest()
    return '%s\n%s\n%s' % (first, meta, body)


def _hold_lock(lab, tmp_path):
    """A process of this test holding the lock (like a playbook that does not finish)."""
    # pylint: disable-next=consider-using-with  # killed by the test
    proc = subprocess.Popen([sys.executable, '-c', 'import fcntl, os, sys, time\n'
                             'fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)\n'
                             'fcntl.flock(fd, fcntl.LOCK_EX)\ntime.sleep(120)', lab.lock_path])
    deadline = time.monotonic() + 10
    while sh('flock', '-n', lab.lock_path, 'true', check=False).returncode == 0:
        assert time.monotonic() < deadline, 'the lock was not taken'
        time.sleep(0.05)
    return proc


# cause: (how the file or the host is spoilt, what the journal line must say)
CAUSES = {
    'appended comment': ('append', 'content does not match its checksum'),
    'cut short': ('cut', 'content does not match its checksum'),
    'lock held longer than the hook waits': ('lock', 'did not finish within %d s; nothing was changed' % LOCK_WAIT),
    'iptables flavour missing': ('no flavour', '(the flavour the rules were applied with) not found'),
    'a rule kvmnet.nat does not write': ('bad rule', 'refusing payload line'),
    '--test refuses the payload': ('test refuses', '--test refused the payload, nothing was changed'),
    'iptables-save hangs': ('hang', 'did not finish within %d s and was stopped' % LIMIT),
    'iptables-save hangs, PATH without coreutils': ('hang, bare PATH', 'did not finish within %d s and was stopped'
                                                    % LIMIT),
    'the library is missing a file': ('library', 'cannot be loaded (ImportError'),
}


@pytest.mark.parametrize('cause', list(CAUSES))
def test_the_hook_exits_0_in_bounded_time_and_logs_whatever_fails(lab, applied, tmp_path, cause):
    how, logged = CAUSES[cause]
    path = lab.base + '.v4'
    with open(path) as handle:
        good = handle.read()
    before = {4: lab.save(4), 6: lab.save(6)}
    bare = ['%s-%s-%s' % (tool, lab.flavour, verb) for tool in ('iptables', 'ip6tables') for verb in ('save', 'restore')
            if (tool, verb) != ('iptables', 'save')] + ['sh']       # sh: this test starts the hook with it
    env_path, journal = tools(lab, tmp_path, only={'no flavour': SCRIPT_TOOLS, 'hang, bare PATH': bare}.get(how))
    holder, restore_lib = None, None
    pidfile = tmp_path / 'save.pid'
    try:
        if how == 'append':
            with open(path, 'a') as handle:
                handle.write('# a note\n')
        elif how == 'cut':
            with open(path, 'w') as handle:
                handle.write(good[:good.index('-I PREROUTING 1 ') + 20])
        elif how == 'bad rule':
            body = good.split('\n', 2)[2].replace('--dport 8080', '--dport 8080 --bogus-option 1', 1)
            with open(path, 'w') as handle:
                handle.write(_with_sum(good, body))
        elif how == 'test refuses':     # something to mend, and a restore tool that refuses its test run
            lab.x('hv', lab.ipt(4), '-t', 'nat', '-D', 'KVMNAT_DNAT', '1')
            before = {4: lab.save(4), 6: lab.save(6)}
            real = shutil.which('iptables-%s-restore' % lab.flavour)
            stub = tmp_path / 'bin' / ('iptables-%s-restore' % lab.flavour)
            stub.write_text('#!/bin/sh\ncase "$*" in *--test*) echo "iptables-restore: line 2 failed" >&2; exit 1;; esac\n'
                            'exec %s "$@"\n' % real)
            stub.chmod(0o755)
        elif how == 'lock':
            holder = _hold_lock(lab, tmp_path)
        elif how == 'library':      # a half-installed library: the entry point runs on a copy without walk.py
            library = tmp_path / 'lib'
            shutil.copytree(os.path.join(lab.collections_path, 'ansible_collections'), str(library / 'ansible_collections'),
                            ignore=shutil.ignore_patterns('walk.py', 'tests', '.git*'))
            restore_lib = str(library)
        elif how in ('hang', 'hang, bare PATH'):
            stub = tmp_path / 'bin' / ('iptables-%s-save' % lab.flavour)
            stub.write_text('#!/bin/sh\necho $$ >%s\nexec sleep 300\n' % pidfile)
            stub.chmod(0o755)
        rc, took, err = hook(lab, tmp_path, env_path, library=restore_lib)
        assert (rc, err) == (0, '')
        assert took < (LOCK_WAIT + 6 if how == 'lock' else BOUND), took
        lines = journal.read_text().splitlines() if journal.exists() else []
        assert len(lines) == 1, lines
        assert lines[0].startswith('-t kvmnet-nat-hook -p daemon.err -- network default port-created begin: '), lines
        assert logged.format(lock=lab.lock_path) in lines[0], lines
        assert {4: lab.save(4), 6: lab.save(6)} == before               # a refusal changes nothing
        if how.startswith('hang'):                                      # stopped with its children
            pid = int(pidfile.read_text())
            assert not os.path.exists('/proc/%d' % pid) or open('/proc/%d/stat' % pid).read().split()[2] == 'Z'
    finally:
        if holder is not None:
            holder.kill()
            holder.wait()
        if pidfile.exists():
            try:
                os.kill(int(pidfile.read_text()), 9)
            except ProcessLookupError:
                pass
        with open(path, 'w') as handle:
            handle.write(good)


@pytest.mark.parametrize('logger', ['sleeps', 'ignores SIGTERM'])
def test_a_journal_that_blocks_does_not_hold_the_hook(lab, applied, tmp_path, logger):
    """logger blocks when journald is stuck on a bad disk: the hook's own logging is bounded too, and
    what it could not log goes to stderr (libvirt keeps a hook's stderr in its log)."""
    path = lab.base + '.v4'
    with open(path) as handle:
        good = handle.read()
    env_path, _journal = tools(lab, tmp_path)
    pidfile = tmp_path / 'logger.pid'
    trap = "trap '' TERM; " if logger == 'ignores SIGTERM' else ''
    (tmp_path / 'bin' / 'logger').write_text('#!/bin/sh\n%secho $$ >%s\nsleep 300\n' % (trap, pidfile))
    try:
        with open(path, 'a') as handle:
            handle.write('# a note\n')
        rc, took, err = hook(lab, tmp_path, env_path)
        assert rc == 0
        assert took < BOUND, took
        assert err.startswith('kvmnet-nat-hook: network default port-created begin: kvmnet-nat-restore failed'), err
        assert 'content does not match its checksum' in err, err
    finally:
        if pidfile.exists():
            try:
                os.kill(int(pidfile.read_text()), 9)
            except ProcessLookupError:
                pass
        with open(path, 'w') as handle:
            handle.write(good)


def test_the_hook_logs_nothing_when_all_is_well_and_mends_what_moved(lab, applied, tmp_path):
    env_path, journal = tools(lab, tmp_path)
    lab.x('hv', lab.ipt(4), '-t', 'nat', '-F', 'KVMNAT_DNAT')           # libvirt rebuilt its rules, say
    assert lab.probe('tcp', PUBLIC_IP, 8080) != 'web01 %s 80' % CLIENT_IP
    assert hook(lab, tmp_path, env_path)[0] == 0
    assert not journal.exists()
    lab.settle()
    assert lab.probe('tcp', PUBLIC_IP, 8080) == 'web01 %s 80' % CLIENT_IP
    assert lab.module(dict(BOTH, persist_path=lab.base))['changed'] is False


# ---------------------------------------------------------------- a failed save (item 5)

def readonly(cmd, directory):
    """``cmd`` in a mount namespace of its own where ``directory`` is mounted read-only."""
    return ['unshare', '-m', '--propagation', 'private', 'sh', '-c',
            'mount --bind "$0" "$0" && mount -o remount,ro,bind "$0" "$0" && exec "$@"', directory] + cmd


def reachable(lab):
    """Which of the host ports answer from the client, and with which guest port."""
    answers = {}
    for port in (8080, 2222, 2223):
        line = lab.probe('tcp', PUBLIC_IP, port)
        answers[port] = int(line.split()[2]) if line.startswith('web01 %s ' % CLIENT_IP) else None
    return answers


# the change made while the directory is read-only, and what answers once it is applied
CHANGES = {
    'close 2222 (the issue)': ({'public_ip': PUBLIC_IP, 'forwards': [fwd(8080, 80)]},
                               {8080: 80, 2222: None, 2223: None}),
    'open 2223 as well': ({'public_ip': PUBLIC_IP, 'forwards': [fwd(8080, 80), fwd(2222, 22), fwd(2223, 22)]},
                          {8080: 80, 2222: 22, 2223: 22}),
    'remove everything': ({'state': 'absent'}, {8080: None, 2222: None, 2223: None}),
    'move 8080 to guest port 81': ({'public_ip': PUBLIC_IP, 'forwards': [fwd(8080, 81), fwd(2222, 22)]},
                                   {8080: 81, 2222: 22, 2223: None}),
    'replace 2222 by 2223': ({'public_ip': PUBLIC_IP, 'forwards': [fwd(8080, 80), fwd(2223, 22)]},
                             {8080: 80, 2222: None, 2223: 22}),
}


@pytest.mark.parametrize('change', list(CHANGES))
def test_a_save_that_fails_applies_nothing_and_the_hook_brings_back_no_closed_port(lab, applied, tmp_path, change):
    params, after = CHANGES[change]
    params = dict(params, persist_path=lab.base)
    env_path, journal = tools(lab, tmp_path)
    files = {name: (tmp_path / 'etc' / name).read_bytes() for name in os.listdir(str(tmp_path / 'etc'))}
    rules = {4: lab.save(4), 6: lab.save(6)}
    lab.settle()
    assert reachable(lab) == {8080: 80, 2222: 22, 2223: None}
    # the change, with /etc read-only: refused, nothing applied
    proc = subprocess.run(readonly(lab.module_cmd(params), str(tmp_path / 'etc')), capture_output=True, text=True,
                          timeout=120, check=False)
    result = lab.result(proc.returncode, proc.stdout, proc.stderr)
    assert result.get('failed') is True
    assert 'failed: Read-only file system; no rule was applied' in result['msg'], result['msg']
    assert result['msg'].endswith('nothing was changed'), result['msg']
    assert {4: lab.save(4), 6: lab.save(6)} == rules
    assert {name: (tmp_path / 'etc' / name).read_bytes() for name in os.listdir(str(tmp_path / 'etc'))} == files
    # libvirt starts a guest: the hook finds the saved files and the live rules in agreement
    assert hook(lab, tmp_path, env_path)[0] == 0 and not journal.exists()
    assert {4: lab.save(4), 6: lab.save(6)} == rules
    lab.settle()
    assert reachable(lab) == {8080: 80, 2222: 22, 2223: None}
    # writable again: applied and saved together, and the hook keeps it so
    result = lab.module(params)
    assert result.get('failed') is not True and result['changed'] is True, result.get('msg')
    lab.x('hv', lab.ipt(4), '-t', 'nat', '-F', 'KVMNAT_DNAT', check=False)   # libvirt rebuilt its rules, say
    assert hook(lab, tmp_path, env_path)[0] == 0 and not journal.exists()
    lab.settle()
    assert reachable(lab) == after


# ---------------------------------------------------------------- the lock: a regular file or nothing

def _make(kind, path, other):
    if kind == 'fifo':
        os.mkfifo(path)
    elif kind == 'dangling symlink':
        os.symlink(other, path)
    elif kind == 'symlink to a file':
        with open(other, 'w') as handle:
            handle.write('precious\n')
        os.symlink(other, path)
    elif kind == 'directory':
        os.mkdir(path)
    elif kind == 'socket':
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(path)
        sock.close()
    elif kind == 'hard link':
        with open(other, 'w') as handle:
            handle.write('precious\n')
        os.link(other, path)


LOCKS = {
    'fifo': ('a FIFO', 'not a regular file'),
    'dangling symlink': ('a symlink', 'not a regular file'),
    'symlink to a file': ('a symlink', 'not a regular file'),
    'directory': ('a directory', 'not a regular file'),
    'socket': ('a socket', 'not a regular file'),
    'hard link': ('2 hard links', 'not a regular file of its own'),
}


@pytest.mark.parametrize('kind', list(LOCKS))
def test_a_lock_that_is_not_a_regular_file_is_refused_by_module_script_and_hook_at_once(lab, applied, tmp_path, kind):
    module_says, script_says = LOCKS[kind]
    path = os.path.join(lab.tmp, 'odd.lock')              # short: a socket's name has a length limit
    other = os.path.join(lab.tmp, 'odd.target')
    _make(kind, path, other)
    try:
        before = {4: lab.save(4), 6: lab.save(6)}
        held = open(other).read() if os.path.exists(other) else None
        for check in (False, True):
            start = time.monotonic()
            result = lab.module(dict(BOTH, persist_path=lab.base, lock_path=path), check=check)
            assert time.monotonic() - start < 30
            assert result.get('failed') is True and 'the host lock %s is not a regular file' % path in result['msg']
            assert module_says in result['msg'], result['msg']
        restore = lab.restore_script(__expose_rules_base=lab.base, __expose_lock_path=path)
        start = time.monotonic()
        proc = sh('ip', 'netns', 'exec', lab.ns['hv'], restore, check=False, timeout=30)
        assert time.monotonic() - start < 10
        assert proc.returncode == 1 and 'the host lock %s is %s' % (path, script_says) in proc.stderr, proc.stderr
        env_path, journal = tools(lab, tmp_path)
        rc, took, _err = hook(lab, tmp_path, env_path, lock=path)
        assert rc == 0 and took < 10
        assert 'the host lock %s is %s' % (path, script_says) in journal.read_text()
        assert {4: lab.save(4), 6: lab.save(6)} == before
        assert (open(other).read() if os.path.exists(other) else None) == held      # nothing made through it
    finally:
        for name in (path, other):
            if os.path.isdir(name) and not os.path.islink(name):
                os.rmdir(name)
            elif os.path.lexists(name):
                os.remove(name)


# ---------------------------------------------------------------- the doctor names a refused file

def _spoil(text, how):
    body = text.split('\n', 2)[2]
    if how == 'appended comment':
        return text + '# a note\n'
    if how == 'cut short':
        return text[:text.index('-I PREROUTING 1 ') + 20]
    if how == 'edited':
        return text.replace('--dport 8080', '--dport 8081', 1)
    if how == 'no header':
        return body
    if how == 'empty':
        return ''
    raise AssertionError(how)


@pytest.mark.parametrize('how', ['appended comment', 'cut short', 'edited', 'no header', 'empty'])
def test_the_doctor_names_a_saved_file_the_hook_refuses(lab, applied, tmp_path, how):
    path = lab.base + '.v4'
    with open(path) as handle:
        good = handle.read()
    try:
        with open(path, 'w') as handle:
            handle.write(_spoil(good, how))
        env_path, journal = tools(lab, tmp_path)
        assert hook(lab, tmp_path, env_path)[0] == 0
        assert path in journal.read_text()                    # the hook logged it ...
        lab.settle()
        assert reachable(lab) == {8080: 80, 2222: 22, 2223: None}     # ... and the live forwards kept answering
        result = lab.module({'public_ip': PUBLIC_IP, 'forwards': BOTH['forwards'], 'persist_path': lab.base,
                             'timeout': 1.0}, check=True, name='doctor')
        assert not result.get('failed'), result.get('msg')
        for item in result['forwards']:
            saved = item['checks']['saved']
            assert saved['ok'] is False and saved['detail'] == '%s: checksum does not match' % path, saved
            assert 'kvmnet-nat-restore refuses it' in ' '.join(c['cause'] for c in item['causes']), item['causes']
    finally:
        with open(path, 'w') as handle:
            handle.write(good)
