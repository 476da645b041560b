# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The iptables backend, the persisted copy: PRIVATE to this collection, no stable API.

Pure Python, no I/O. The file kvmnet-nat-restore applies at boot and at libvirt network events: a
header (format, family, flavour, prefix, SHA-256 of the rest), then the payload that builds the
managed chains and jumps from nothing. Reading it back gives the header's fields and, for a restore,
the desired state it describes.
"""

from __future__ import annotations

import hashlib

from ansible_collections.kvmnet.nat.plugins.module_utils._backend import RulesetError
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables.grammar import PayloadError, check_payload
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables.plan import plan
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables.rules import Desired, render_jumps, valid_prefix

PERSIST_FORMAT = 2
FLAVOURS = ('legacy', 'nft', 'unknown')    # what kvmnet-nat-restore accepts in the header


def persist_text(desired, flavour, check=True):
    """The persisted copy: a header kvmnet-nat-restore checks, then the payload that builds the
    managed chains and jumps from nothing (``plan({}, desired)``), and nothing else.

    The header names the iptables flavour the rules were applied with (the restore script uses
    the same) and the SHA-256 of the rest, so a file cut short or edited is refused as a whole.
    """
    body = plan({}, desired, check=check).payload     # check=False: compared only, never written
    header = '# Managed by kvmnet.nat: only its own chains (%s_*) and their jumps. Do not edit.\n' % desired.prefix
    meta = '# kvmnet-nat-restore format=%d family=%d flavour=%s prefix=%s sha256=%s\n' % (
        PERSIST_FORMAT, desired.family, flavour, desired.prefix, hashlib.sha256(body.encode('ascii')).hexdigest())
    # the body is plan()'s payload, grammar-checked there; the two header lines are made here from a
    # validated prefix and a detected flavour: checking the whole text again cost the doctor ~2 s at N=5000
    if not (valid_prefix(desired.prefix) and flavour in FLAVOURS):
        raise PayloadError('refusing to save rules with prefix %r and flavour %r' % (desired.prefix, flavour))
    return header + meta + body


def read_persisted(text):
    """(fields of the ``kvmnet-nat-restore`` header line, the body) of a persisted file, as
    kvmnet-nat-restore reads it: the header is line 2 (``persist_text``), the body every line after
    it; ``valid``: the body's SHA-256 is the one in the header."""
    lines = text.split('\n')
    if len(lines) < 2 or not lines[1].startswith('# kvmnet-nat-restore '):
        return {'valid': False}, text
    fields = dict(word.split('=', 1) for word in lines[1].split()[2:] if '=' in word)
    body = '\n'.join(lines[2:])
    fields['valid'] = fields.get('sha256') == hashlib.sha256(body.encode('utf-8', 'replace')).hexdigest()
    return fields, body


def saved_header(text, family):
    """The header fields (format, family, flavour, prefix) of a persisted file of ``family``, for a
    restore that knows nothing else of it; RulesetError naming what is wrong (no header, a header not
    understood, a checksum that does not match, a flavour not known)."""
    if not text.split('\n', 2)[1:2] or not text.split('\n', 2)[1].startswith('# kvmnet-nat-restore '):
        raise RulesetError('no kvmnet-nat-restore header')
    fields, _body = read_persisted(text)
    sha = fields.get('sha256') or ''
    if (fields.get('format') != str(PERSIST_FORMAT) or fields.get('family') != str(family)
            or not valid_prefix(fields.get('prefix')) or len(sha) != 64 or sha.strip('0123456789abcdef')):
        raise RulesetError('header not understood (format=%s family=%s prefix=%s)'
                           % (fields.get('format'), fields.get('family'), fields.get('prefix')))
    if not fields['valid']:
        raise RulesetError('content does not match its checksum (cut short or edited)')
    if fields.get('flavour') not in FLAVOURS:
        raise RulesetError('unknown iptables flavour %s' % (fields.get('flavour'),))
    return fields


def _desired_of_body(body, family, prefix):
    """The Desired a persisted body (a payload from nothing, grammar-checked) builds."""
    desired = Desired(family=family, prefix=prefix)
    jumps, table = {}, None
    for line in body.split('\n'):
        words = line.split(' ')
        if line.startswith('*'):
            table = line[1:]
        elif line.startswith(':'):
            desired.chains[(table, line[1:].split(' ')[0])] = []
        elif words[0] == '-A':
            desired.chains.setdefault((table, words[1]), []).append(line.split(' ', 2)[2])
        elif words[0] == '-I':
            jumps[(table, words[1])] = line.split(' ', 3)[3]
    order = [(t, c) for t, c, _spec in render_jumps(prefix)]
    desired.jumps = [(t, c, jumps[(t, c)]) for t, c in order if (t, c) in jumps]
    return desired


def desired_from_persisted(text, family, prefix):
    """The desired state a persisted file describes, for a restore to plan against the live tables.

    RulesetError unless the header is there, its checksum matches, it names ``family`` and ``prefix``,
    and every line of the body is one the engine writes (the file is data, never executed as is)."""
    fields, body = read_persisted(text)
    if not fields['valid']:
        raise RulesetError('the saved rules have no valid kvmnet-nat-restore header or their checksum does not match')
    expected = {'format': str(PERSIST_FORMAT), 'family': str(family), 'prefix': prefix}
    wrong = ['%s=%s (expected %s)' % (k, fields.get(k), v) for k, v in sorted(expected.items()) if fields.get(k) != v]
    if wrong:
        raise RulesetError('the saved rules are not for this run: %s' % ', '.join(wrong))
    check_payload(body, prefix)
    return _desired_of_body(body, family, prefix)


def rule_specs(lines):
    """The rule specs of the ``-A`` lines among ``lines`` of a persisted body (the doctor's comparison)."""
    return {line.split(' ', 2)[2] for line in lines if line.startswith('-A ') and line.count(' ') >= 2}
