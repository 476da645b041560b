# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The converge driver: PRIVATE to this collection, no stable API.

One sequence for every backend (_backend.py): read and plan every scope (a backend's unit of change: one
IP family for iptables, both in one table for nftables) and test every payload before changing any; write
the saved files first, then apply each scope and read it back; put the
saved files back when a payload fails. The host lock, check mode (nothing written, no lock created),
the diff and every error text of that sequence are here, once. The module (plugins/modules/forwards.py)
checks its parameters and the host, then calls ``converge``; ``run`` turns refusals into failures.
"""

from __future__ import annotations

import os

from ansible_collections.kvmnet.nat.plugins.module_utils import _command, _files, _forward, _lock
from ansible_collections.kvmnet.nat.plugins.module_utils._backend import BackendUnavailable, RulesetError

PERSIST_MODE = 0o640
MAX_LOCK_TIMEOUT = 600


def _name(key):
    """How messages name a scope: ``IPv4`` for ``ipv4``, the key itself otherwise (``inet``)."""
    return 'IPv' + key[3:] if key.startswith('ipv') else key


def forward_result(fwd):
    return dict(guest=fwd.guest, guest_ip=str(fwd.guest_ip), proto=fwd.proto,
                host_port=str(fwd.host_ports), guest_port=str(fwd.guest_ports),
                public_ip=str(fwd.public_ip) if fwd.public_ip else None,
                in_interface=fwd.in_interface, sources=[str(s) for s in fwd.sources],
                masquerade=fwd.masquerade,
                guest_network=str(fwd.guest_network) if fwd.guest_network else None)


def persist_paths(path, check_mode=False, suffixes=None):
    """``<path>.<suffix>`` for each scope's key ({key: suffix}, the engine's ``saved_files``; by default
    ``<path>.v4`` and ``<path>.v6``), after checking the path can hold them; None when not asked.

    In check mode the directory may be missing (a role creates it before the real run)."""
    if not path:
        return None
    if not os.path.isabs(path) or path.endswith('/'):
        raise ValueError('persist_path %r must be an absolute file name (the module writes <persist_path>.v4 '
                         'and .v6)' % (path,))
    parent = os.path.dirname(path)
    if not os.path.isdir(parent) and not check_mode:
        raise ValueError('persist_path %s: directory %s does not exist' % (path, parent))
    suffixes = suffixes or {'ipv%d' % family: 'v%d' % family for family in _forward.FAMILIES}
    paths = {key: '%s.%s' % (path, suffix) for key, suffix in suffixes.items()}
    for target in paths.values():
        if os.path.islink(target) or (os.path.lexists(target) and not os.path.isfile(target)):
            raise ValueError('persist_path: %s exists and is not a regular file; remove it first' % target)
    return paths


def check_params(module, engine):
    """Parameters checked before anything is read or changed: the backend's own, the lock, the saved
    files. Returns the saved files' paths ({scope key: path} or None)."""
    params = module.params
    problems = list(engine.problems())
    if not 1 <= params['lock_timeout'] <= MAX_LOCK_TIMEOUT:
        problems.append('lock_timeout %s must be between 1 and %d seconds' % (params['lock_timeout'], MAX_LOCK_TIMEOUT))
    if not os.path.isabs(params['lock_path']):
        problems.append('lock_path %r must be an absolute path' % (params['lock_path'],))
    try:
        paths = persist_paths(params['persist_path'], module.check_mode, engine.saved_files)
    except ValueError as exc:
        problems.append(str(exc))
        paths = None
    if problems:
        module.fail_json(msg='invalid parameters, nothing was changed: %s' % '; '.join(problems), errors=problems)
    return paths


def _families(scope):
    """The IP families a scope covers: itself for 4 or 6, both for a backend that holds them together."""
    return (scope,) if scope in _forward.FAMILIES else _forward.FAMILIES


def plan_families(module, engine, forwards):
    """Read and plan every scope, and test every payload, before changing any: a refusal leaves all untouched.
    Returns [(backend, desired, plan)] of the scopes the host has a tool for."""
    work = []
    for scope in engine.scopes:
        try:
            backend = engine.open(scope)
        except BackendUnavailable as exc:
            if scope not in getattr(engine, 'forward_scopes', engine.scopes):
                continue                            # a retired backend without its tool: nothing of it to remove
            given = sorted({fwd.family for fwd in forwards if fwd.family in _families(scope)})
            if given:
                module.fail_json(msg='%s forwards were given but %s, nothing was changed'
                                 % (' and '.join('IPv%d' % family for family in given), exc))
            continue
        desired = backend.desired(forwards)
        plan = backend.plan(backend.read(), desired)
        if plan.changed:
            backend.test(plan)
        work.append((backend, desired, plan))
    return work


def _read_back(module, backend, desired, plan, result):
    recheck = backend.read_back(desired)
    if recheck.changed:
        module.fail_json(msg='%s rules were applied but the ruleset read back differs from the desired '
                         'one (%s); this is a bug in kvmnet.nat, please report it with this output'
                         % (_name(backend.key), '; '.join(recheck.reasons)),
                         payload=plan.payload, **result)


def apply(module, work, result, paths=None, previous=None):
    """Apply each scope's plan and read it back; True if anything changed.

    When a payload fails, the saved files ``persist`` wrote for it and for the scopes not applied yet
    are put back as they were (``previous``), so that they still describe the live rules."""
    changed = False
    applied = set()
    for index, (backend, desired, plan) in enumerate(work):
        key = backend.key
        result['reasons'].extend('%s %s' % (key, r) for r in plan.reasons)
        if not getattr(backend, 'retired', False):       # the backend not chosen: only what it removes is said
            result['flavour'][key] = backend.flavour
            result['rules'][key] = plan.after
        if not plan.changed:
            continue
        changed = True
        if module.check_mode:
            continue
        try:
            backend.apply(plan)
        except _command.CommandError as exc:
            pending = {b.key for b, _d, p in work[index:] if p.changed}
            module.fail_json(msg='%s; %s' % (exc, _after_failed_apply(module, paths, previous or {}, pending, applied)),
                             cmd=exc.cmd, rc=exc.rc, stderr=exc.stderr)
        applied.add(backend.key)
        _read_back(module, backend, desired, plan, result)
    return changed


def _persist_one(module, path, text):
    """Write (or with text=None remove) one persisted file. Returns (changed, what it held before: bytes,
    or None when it did not exist)."""
    try:
        with open(path, 'rb') as handle:
            before = handle.read()
    except FileNotFoundError:
        before = None
    if text is None:
        if before is None:
            return False, None
        if not module.check_mode:
            os.remove(path)
        return True, before
    if before == text.encode('utf-8') and (os.stat(path).st_mode & 0o7777) == PERSIST_MODE:
        return False, before
    if not module.check_mode:
        _files.write_atomic(module, path, text, PERSIST_MODE)
    return True, before


def _put_back(module, paths, previous):
    """Put the saved files of ``previous`` ({scope key: content or None}) back as they were; the problems."""
    problems = []
    for key in sorted(previous):
        path, before = paths[key], previous[key]
        try:
            if before is None:
                if os.path.lexists(path):
                    os.remove(path)
            else:
                _files.write_atomic(module, path, before, PERSIST_MODE)
        except OSError as exc:
            problems.append('putting back %s failed (%s): it now holds rules that are not applied, which '
                            'kvmnet-nat-restore would apply at the next libvirt event or boot; run again'
                            % (path, exc.strerror or exc))
    return problems


def _after_failed_apply(module, paths, previous, pending, applied):
    """What became of the saved files when a payload failed: the ones of the scopes not applied are put back."""
    back = {key: previous[key] for key in pending if key in previous}
    problems = _put_back(module, paths, back)
    notes = ['%s rules were applied and saved' % _name(key) for key in sorted(applied)] or ['nothing was changed']
    if back and not problems:
        notes.append('%s put back as it was' % ', '.join(paths[key] for key in sorted(back)))
    return '; '.join(notes + problems)


def persist(module, work, paths):
    """Write (or remove) every scope's saved file before any rule is applied (issue 19).

    kvmnet-nat-restore applies these files at boot and at every libvirt network event; a file that
    disagrees with the live rules would bring back a forward that was removed. So a file that cannot be
    written (a read-only /etc, a full disk) fails the task before anything is applied, and the files
    already written in this run are put back (a read-only directory allows neither writing nor deleting
    nor renaming a file in it, so an older file there cannot be made unrestorable: it must stay right).
    Returns (reasons, {scope key: what the file held before}) for the files it changed."""
    reasons, previous = [], {}
    for backend, desired, _unused in work:
        path = paths[backend.key]
        text = backend.persisted_text(desired)
        try:
            written, before = _persist_one(module, path, text)
        except OSError as exc:
            problems = _put_back(module, paths, previous)
            module.fail_json(msg='%s %s failed: %s; no rule was applied (the saved files must describe the '
                             'live rules, or kvmnet-nat-restore would bring old forwards back), %s'
                             % ('writing' if text else 'removing', path, exc.strerror or exc,
                                '; '.join(problems) or 'nothing was changed'))
        if written:
            previous[backend.key] = before
            reasons.append('%s persisted rules in %s %s' % (backend.key, path, 'updated' if text else 'removed'))
    return reasons, previous


def diff(engine, work):
    before, after = [], []
    for backend, _desired, plan in work:
        key = backend.key
        before.extend('%s %s' % (key, line) for line in plan.before)
        after.extend('%s %s' % (key, line) for line in plan.after)
    return dict(before='\n'.join(before) + '\n' if before else '', after='\n'.join(after) + '\n' if after else '',
                before_header=engine.diff_header, after_header=engine.diff_header)


def converge(module, engine, forwards, paths):
    """Bring every family to ``forwards`` under the host lock, saved files first; exit_json with the result.
    An engine with ``prepare`` (_backends.Switch: which backend) prepares under the lock, before any read."""
    params = module.params
    details = params['return_details']
    result = dict(rules={}, reasons=[], flavour={}, forwards=[forward_result(f) for f in forwards] if details else [])
    # check mode takes the lock only when its file exists, and never writes it (see _lock)
    with _lock.host_lock(params['lock_path'], params['lock_timeout'], 'kvmnet.nat.forwards',
                         write=not module.check_mode):
        if hasattr(engine, 'prepare'):
            result.update(engine.prepare(removing=not forwards))
        work = plan_families(module, engine, forwards)
        saved, previous = persist(module, work, paths) if paths else ([], {})     # saved first, then applied
        changed = apply(module, work, result, paths, previous)
        result['reasons'].extend(saved)
        changed = changed or bool(saved)
    result['changed'] = changed
    if module._diff:
        result['diff'] = diff(engine, work)
    if not details:
        # Without details, Ansible's echo of the arguments (the result's ``invocation``: always before
        # ansible-core 2.21, with INJECT_INVOCATION from 2.21) leaves out the forwards too: exit_json would
        # otherwise scan every forward for no_log values and encode it again, 0.3 s at 10 000 forwards
        # (docs/benchmarks.md), for a copy the controller has. When the controller does not ask for the
        # echo, exit_json drops it.
        result.update(rules={}, forwards=[],
                      invocation=dict(module_args=dict((k, v) for k, v in params.items() if k != 'forwards')))
    module.exit_json(**result)


def run(module, steps):
    """``steps(module)`` with its refusals turned into failures that say nothing changed."""
    try:
        steps(module)
    except RulesetError as exc:
        module.fail_json(msg='refusing to change the ruleset, nothing was changed: %s' % exc)
    except _lock.LockError as exc:
        module.fail_json(msg=str(exc))
    except _command.CommandError as exc:
        module.fail_json(msg=str(exc), cmd=exc.cmd, rc=exc.rc, stderr=exc.stderr)
