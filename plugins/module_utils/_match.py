# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The ``expect`` of a port, matched against a server's answer, in bounded time: PRIVATE to this collection.

``expect`` is a Python regular expression, searched (``re.search``) in the answer. The inventory is
written by people the controller need not trust, and a pattern like ``^(a+)+$`` takes exponential
time on an answer of a few dozen characters. So the pattern is at most MAX_PATTERN characters, the
text searched is the answer's first MAX_TEXT characters, and the search runs in a forked child
process that is killed after ``seconds`` (MatchTimeout). kvmnet.nat.probe, kvmnet.nat.doctor and the
inventory check use this module only.
"""

from __future__ import annotations

import os
import re
import select
import signal
import time

MAX_PATTERN = 256
MAX_TEXT = 512
SECONDS = 1.0


class MatchTimeout(ValueError):
    """The search did not end within its time limit."""


def problem(pattern):
    """Why ``pattern`` cannot be an ``expect``, or None."""
    if not isinstance(pattern, str):
        return 'must be text, not %r' % (pattern,)
    if len(pattern) > MAX_PATTERN:
        return 'is %d characters long; at most %d' % (len(pattern), MAX_PATTERN)
    try:
        re.compile(pattern)
    except re.error as exc:
        return 'is not a regular expression: %s' % exc
    return None


def _child(pattern, text, out):
    try:
        os.write(out, b'1' if re.search(pattern, text) else b'0')
    finally:
        os._exit(0)


def search(pattern, text, seconds=SECONDS):
    """Whether ``pattern`` is found in the first MAX_TEXT characters of ``text``; MatchTimeout when
    the search takes longer than ``seconds``, ValueError when ``pattern`` is no valid ``expect``."""
    reason = problem(pattern)
    if reason:
        raise ValueError('expect %r %s' % (pattern, reason))
    text = (text or '')[:MAX_TEXT]
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:        # pragma: no cover (the child ends in os._exit)
        os.close(read_end)
        _child(pattern, text, write_end)
    os.close(write_end)
    answer = None
    try:
        deadline = time.monotonic() + seconds
        ready = []
        while not ready:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            ready, _unused, _unused = select.select([read_end], [], [], left)
        if ready:
            answer = os.read(read_end, 1)
    finally:
        os.close(read_end)
        if answer is None:
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    if answer is None:
        raise MatchTimeout('expect %r took more than %g s to search the answer (nested repeats such as (a+)+ '
                           'take exponential time); write a simpler pattern' % (pattern, seconds))
    if answer not in (b'0', b'1'):
        raise MatchTimeout('expect %r: the search ended without an answer' % (pattern,))
    return answer == b'1'
