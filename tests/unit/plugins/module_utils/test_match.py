# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""_match: the probe's ``expect``, searched in bounded time."""

from __future__ import annotations

import time

import pytest

from ansible_collections.kvmnet.nat.plugins.module_utils import _match


@pytest.mark.parametrize('pattern, text, expected', [
    ('^web01 ', 'web01 203.0.113.50', True),
    ('^dns', 'web01 dns', False),
    ('.', 'x', True),
    ('203\\.0\\.113\\.\\d+$', 'web01 203.0.113.50', True),
    ('x$', 'a' * 600 + 'x', False),                  # only the first 512 characters are searched
    ('^a{512}$', 'a' * 600, True),
])
def test_search(pattern, text, expected):
    assert _match.search(pattern, text) is expected


@pytest.mark.parametrize('pattern, text', [
    ('^(a+)+$', 'a' * 40 + '!'),                     # the case: minutes of backtracking
    ('(a|aa)+$', 'a' * 60 + '!'),
    ('(a*)*b', 'a' * 40),
    ('^(\\w+\\s?)*$', 'word ' * 20 + '!'),
    ('(x+x+)+y', 'x' * 40),
])
def test_a_pattern_that_backtracks_for_ever_is_stopped_in_its_time_limit(pattern, text):
    start = time.monotonic()
    with pytest.raises(_match.MatchTimeout) as exc:
        _match.search(pattern, text, seconds=0.5)
    assert time.monotonic() - start < 2.0
    assert str(exc.value) == ('expect %r took more than 0.5 s to search the answer (nested repeats such as (a+)+ take '
                              'exponential time); write a simpler pattern' % pattern)


@pytest.mark.parametrize('pattern, expected', [
    ('(unclosed', 'is not a regular expression: missing ), unterminated subpattern at position 0'),
    ('a' * 257, 'is 257 characters long; at most 256'),
    (5, 'must be text, not 5'),
    ('[', 'is not a regular expression: unterminated character set at position 0'),
    ('^web01 ', None),
    ('a' * 256, None),
])
def test_problem(pattern, expected):
    assert _match.problem(pattern) == expected
