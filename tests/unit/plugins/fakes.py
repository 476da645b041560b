# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""One stand-in for AnsibleModule in every unit test: parameters in, canned command answers, result out."""

from __future__ import annotations

import os

import pytest

ENVIRON = {'LANG': 'C', 'LC_ALL': 'C', 'LC_MESSAGES': 'C'}


class Exit(Exception):
    """exit_json or fail_json: the module's result."""

    def __init__(self, result):
        super().__init__(result.get('msg', ''))
        self.result = result


def key(cmd):
    """A command as the tables name it: the program without its directory, then its arguments."""
    return ' '.join([cmd[0].rsplit('/', 1)[-1]] + list(cmd[1:]))


class FakeModule:
    """``answers``: a list of (command prefix, (rc, out, err)) consumed in order, a dict from command
    prefix to answer (any order, any number of times), or a function of the command key.
    ``binaries``: the commands get_bin_path finds (all when None)."""

    def __init__(self, params=None, answers=None, check_mode=False, diff=False, binaries=None):
        self.params = dict(params or {})
        self.answers = answers if answers is not None else {}
        self.check_mode = check_mode
        self._diff = diff
        self.binaries = binaries
        self.calls = []
        self.warnings = []

    def get_bin_path(self, name, required=False):
        return '/usr/sbin/' + name if self.binaries is None or name in self.binaries else None

    def run_command(self, cmd, data=None, binary_data=False, environ_update=None):
        assert isinstance(cmd, list) and environ_update == ENVIRON     # never a string, always LANG=C
        command = key(cmd)
        self.calls.append((command, data))
        if callable(self.answers):
            return self.answers(command)
        if isinstance(self.answers, list):
            assert self.answers, 'unexpected command: %s' % command
            prefix, answer = self.answers.pop(0)
            assert command.startswith(prefix), 'expected %s, ran %s' % (prefix, command)
            return answer
        for prefix, answer in self.answers.items():
            if command.startswith(prefix):
                return answer
        raise AssertionError('unexpected command: %s' % command)

    def commands(self):
        return [command for command, _data in self.calls]

    def warn(self, text):
        self.warnings.append(text)

    def fail_json(self, **result):
        raise Exit(dict(result, failed=True))

    def exit_json(self, **result):
        raise Exit(result)

    def atomic_move(self, src, dest):
        os.replace(src, dest)


def result_of(run, module):
    """What ``run(module)`` ends with (exit_json or fail_json)."""
    with pytest.raises(Exit) as info:
        run(module)
    return info.value.result
