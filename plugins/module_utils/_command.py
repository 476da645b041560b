# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""How every kvmnet.nat module runs a command: PRIVATE to this collection, no stable API.

An argument list (never a joined string, never a shell) through ``module.run_command`` with
``LANG=C``; a failure is a CommandError carrying the command, its rc and stderr, and what was
being done.
"""

from __future__ import annotations

ENVIRON = {'LANG': 'C', 'LC_ALL': 'C', 'LC_MESSAGES': 'C'}


class CommandError(Exception):
    def __init__(self, cmd, rc, stderr, context=''):
        self.cmd = list(cmd)
        self.rc = rc
        self.stderr = (stderr or '').strip()
        self.context = context
        text = '%s failed (rc=%s): %s' % (' '.join(self.cmd), rc, self.stderr or '(no stderr)')
        super().__init__('%s: %s' % (context, text) if context else text)


def run(module, argv, data=None, context='', check=True):
    """(rc, stdout, stderr) of ``argv``; with ``check``, CommandError when rc is not 0."""
    if data is None:
        rc, out, err = module.run_command(list(argv), environ_update=ENVIRON)
    else:
        rc, out, err = module.run_command(list(argv), data=data, binary_data=True, environ_update=ENVIRON)
    if check and rc != 0:
        raise CommandError(argv, rc, err or out, context)
    return rc, out, err


def failing_line(payload, stderr, pattern):
    """The payload line a tool's stderr names by number (``pattern``'s first group, 1-based), or ''."""
    m = pattern.search(stderr or '')
    if not m:
        return ''
    lines = payload.splitlines()
    index = int(m.group(1)) - 1
    return lines[index].strip()[:300] if 0 <= index < len(lines) else ''
