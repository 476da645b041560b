# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""kvmnet-nat-restore, the program the boot unit, the netfilter-persistent plugin and the libvirt network
hook run: PRIVATE to this collection, no stable API.

It runs on the hypervisor without Ansible: the role installs this file and the module_utils it imports
under /usr/local/lib/kvmnet-nat, and the entry point roles/expose/files/kvmnet_nat_restore.py, which runs
the commands (module_utils may not) and calls ``main``. It uses the module's own planner, grammar check and
host lock (_lock), per scope of each backend: an IP family for iptables (``<base>.v4``, ``<base>.v6``), our
one table for nftables (``<base>.nft``). The module keeps the files of one backend only (it removes the
other's when the backend changes), so only one backend's files exist; a scope without a file is left alone:

- ``start``: the saved file's desired state against the live ruleset. Nothing at all runs when all is as
  saved (a guest starting, the usual hook event); otherwise one payload, tested (``--test``), applied in
  one transaction, read back.
- ``flush``: our jumps and chains removed, in one transaction per family.

The saved file is data: its header (format, family, flavour, prefix, SHA-256 of the rest) and every line
of it are checked before anything runs, and nothing from it is ever executed. The rules are changed with
the flavour the file names. A family whose file is refused or whose payload fails is left as it was.
Exit status 0 when every family is as asked, 1 when anything was refused or failed, 2 on a usage error.
"""

from __future__ import annotations

import os
import stat
import sys

from ansible_collections.kvmnet.nat.plugins.module_utils import _command, _lock
from ansible_collections.kvmnet.nat.plugins.module_utils._backend import BackendUnavailable, RulesetError
from ansible_collections.kvmnet.nat.plugins.module_utils._schema import DEFAULT_PREFIX
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables import backend as _iptables
from ansible_collections.kvmnet.nat.plugins.module_utils.nftables import backend as _nftables

NAME = 'kvmnet-nat-restore'
DEFAULT_WAIT = 30
MAX_WAIT = 600
MAX_FILE = 64 * 1024 * 1024        # a saved file of 10 000 forwards is a few MB


def lock_wait(text):
    """Seconds to wait for the host lock and for iptables' own lock: a positive integer written without
    a leading zero, at most MAX_WAIT; anything else is DEFAULT_WAIT."""
    if len(text) <= 3 and text.isdigit() and text.isascii() and not text.startswith('0') and int(text) <= MAX_WAIT:
        return int(text)
    return DEFAULT_WAIT


def read_saved(path):
    """(text, problem) of a saved file: (None, None) when there is none, a problem when it is not a
    regular file (looked at before it is opened: a device is never opened), cannot be read, is empty, too
    large or not UTF-8."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return None, '%s: not a regular file; not restored' % path
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, 'rb') as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):     # swapped since the lstat
                return None, '%s: not a regular file; not restored' % path
            data = handle.read(MAX_FILE + 1)
    except FileNotFoundError:
        return None, None
    except (OSError, MemoryError) as exc:
        return None, '%s: cannot be read (%s); not restored' % (path, getattr(exc, 'strerror', None) or exc)
    if not data:
        return None, '%s: empty (cut short?); not restored' % path
    if len(data) > MAX_FILE:
        return None, '%s: larger than %d bytes; not restored' % (path, MAX_FILE)
    try:
        return data.decode('utf-8'), None
    except UnicodeDecodeError:
        return None, '%s: not UTF-8 text (edited?); not restored' % path


def _label(scope):
    """How messages name a scope: IPv4, IPv6, or the scope itself (inet)."""
    return 'IPv%d' % scope if scope in (4, 6) else str(scope)


def _open(engine, scope, path, action, text):
    """(backend, desired) for one scope: the saved file's, or for a flush with no file, the host's
    detected flavour and the default prefix with nothing desired."""
    if text is None:
        backend = engine.open(scope)
        return backend, backend.desired([])
    try:
        backend, desired = engine.open_saved(scope, text)
    except RulesetError as exc:
        raise RulesetError('%s: %s' % (path, exc)) from None
    return backend, backend.desired([]) if action == 'flush' else desired


def _change(backend, desired, plan, log):
    """Test, apply and read back one scope's plan; False (and logged) when any of it fails."""
    label = _label(backend.family or backend.key)
    try:
        backend.test(plan)
    except _command.CommandError as exc:
        log('err', '%s: %s --test refused the payload, nothing was changed: %s'
            % (label, os.path.basename(exc.cmd[0]), exc.stderr or exc))
        return False
    backend.apply(plan)
    recheck = backend.read_back(desired)
    if recheck.changed:
        log('err', '%s: the rules were applied but the ruleset read back differs (%s); run kvmnet.nat.doctor'
            % (label, '; '.join(recheck.reasons)))
        return False
    return True


def restore_family(engine, scope, path, action, log):
    """Bring one scope (an IP family, for iptables) to its saved file (``start``) or remove our rules
    (``flush``); True when it is as asked, False when something was refused or failed (logged; the scope
    left as it was)."""
    label = _label(scope)
    text, problem = read_saved(path)
    if problem:
        log('err', problem)
        return False
    if text is None and action == 'start':
        return True                                 # no file: no forwards of this scope
    try:
        backend, desired = _open(engine, scope, path, action, text)
        plan = backend.plan(backend.read(), desired)
        if not plan.changed:
            log('debug', '%s: up to date' % label)
            return True
        if not _change(backend, desired, plan, log):
            return False
    except BackendUnavailable as exc:
        if text is None:                            # flush, and no tool: nothing of ours can be there
            return True
        log('err', '%s: %s; not restored' % (label, exc))
        return False
    except RulesetError as exc:
        log('err', '%s: %s; nothing was changed' % (label, exc))
        return False
    except _command.CommandError as exc:
        log('err', '%s: %s' % (label, exc))
        return False
    log('notice', '%s: %s: applied (%s)' % (label, action, '; '.join(plan.reasons)))
    return True


def _key(scope):
    """A scope's key in an engine's ``saved_files``: ``ipv4`` for 4, the scope itself otherwise (``inet``)."""
    return 'ipv%d' % scope if scope in (4, 6) else scope


def _restore_each(engines, base, action, log):
    """Every scope of every engine in turn, each on its own: one that fails unexpectedly is logged and the
    next still runs. A scope without a saved file has nothing to restore (``start``)."""
    done = []
    for engine in engines:
        for scope in engine.scopes:
            try:
                path = '%s.%s' % (base, engine.saved_files[_key(scope)])
                done.append(restore_family(engine, scope, path, action, log))
            except Exception as exc:        # pylint: disable=broad-exception-caught  # logged, never a traceback
                log('err', '%s: failed: %s: %s' % (_label(scope), type(exc).__name__, exc))
                done.append(False)
    return done


def main(argv, base, lock_path, host, log, environ=None, stream=None):
    """The program: ``argv`` is ``[start|flush]``; the saved files are ``<base>.<suffix>`` of each scope;
    ``host`` runs the commands (``get_bin_path``, ``run_command``), ``log(level, text)`` reports. Reads
    KVMNET_NAT_LOCK_TIMEOUT (seconds to wait for the locks) from ``environ``, nothing else."""
    environ = os.environ if environ is None else environ
    stream = stream or sys.stderr
    action = argv[0] if argv else 'start'
    if len(argv) > 1 or action not in ('start', 'flush'):
        stream.write('usage: %s [start|flush]\n' % NAME)
        return 2
    wait = lock_wait(environ.get('KVMNET_NAT_LOCK_TIMEOUT', ''))
    engines = (_iptables.Engine(host, DEFAULT_PREFIX, wait), _nftables.Engine(host, DEFAULT_PREFIX))
    try:
        with _lock.host_lock(lock_path, wait, '%s %s' % (NAME, action)):
            done = _restore_each(engines, base, action, log)
    except _lock.LockError as exc:
        log('err', str(exc))
        return 1
    return 0 if all(done) else 1
