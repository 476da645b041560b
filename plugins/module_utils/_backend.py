# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The seam between the converge driver and a firewall backend: PRIVATE to this collection, no stable API.

A backend owns every line of its firewall's text (reading, rendering, planning, the persisted file);
the driver (_converge.py) owns the order of things, the lock, check mode, save-before-apply, the diff
and the error texts, once for every backend. In the spirit of community.crypto's ``module_backends``
and community.docker's engine driver.

Two objects per backend:

- an **Engine** (one per run): names the backend (``diff_header``), validates its own parameters and
  ``open(scope)`` gives the Backend of one scope (an IP family, or both in one table) or raises
  BackendUnavailable;
- a **Backend** (one per scope): the methods of the Backend protocol below. ``live`` and ``desired``
  values are the backend's own (opaque to the driver); ``desired.empty`` says there is nothing to own.

The iptables backend is plugins/module_utils/iptables/; the fake in-memory one, for the driver's
contract tests, tests/support/fake_backend.py.
"""

from __future__ import annotations

from dataclasses import dataclass

try:
    from typing import Protocol
except ImportError:     # Python < 3.8 on a managed node: the protocols are documentation only there
    Protocol = object


class RulesetError(Exception):
    """The live ruleset is in a state the engine refuses to change (foreign rules in our chains,
    rules in two flavours at once, text the backend cannot read)."""


class BackendUnavailable(Exception):
    """The host has no tool for this family; the message says so (the driver adds whether that matters)."""


@dataclass
class Plan:
    """What one family needs: ``changed``; ``payload`` (the backend's transaction, '' when nothing
    changes); ``before``/``after`` (one line per managed item, the diff); ``reasons`` (why it changes)."""
    family: int
    changed: bool
    payload: str
    before: list
    after: list
    reasons: list


class Backend(Protocol):
    """One scope of one firewall backend: what it changes in one transaction. Attributes: ``families``
    (the IP families it covers: (4,) or (6,) for iptables, (4, 6) for one nftables table); ``family`` (4
    or 6 for a one-family backend, else None); ``key`` (how results, diffs and saved files name it:
    ``ipv4``, ``ipv6``, ``inet``); ``flavour`` (what the result's ``flavour`` reports, e.g. ``nft`` or
    ``legacy``)."""

    families: tuple
    family: int
    key: str
    flavour: str

    # ------------------------------------------------------------ converge
    def read(self):
        """The live managed state, read from the host (the first read may reuse what ``open`` read)."""

    def desired(self, forwards):
        """The desired state of this family from validated forwards (_forward.Forward)."""

    def plan(self, live, desired):
        """A Plan from live to desired; RulesetError when the live state must not be changed."""

    def test(self, plan):
        """Check the plan's payload with the host's tool without changing anything (CommandError)."""

    def apply(self, plan):
        """Apply the plan's payload in one transaction (CommandError)."""

    def read_back(self, desired):
        """Read again and plan against ``desired``: ``changed`` is False when the host is as desired."""

    # ------------------------------------------------------------ persisted copy (boot-time restore)
    def persisted_text(self, desired):
        """The file that rebuilds ``desired`` from nothing (header with checksum, then the payload), or
        None when there is nothing to keep (the file is removed)."""

    def read_persisted(self, text):
        """(header fields with ``valid``, body) of a persisted file."""

    def desired_from_persisted(self, text):
        """The desired state a valid persisted file describes; RulesetError when it is not one."""


class Engine(Protocol):
    """A backend kind, for one run: ``diff_header`` names what the diff shows; ``scopes`` what ``open``
    takes, one Backend each (iptables: 4 and 6; nftables: 'inet'); ``saved_files`` the suffix of each
    scope's saved file by its key ({'ipv4': 'v4', 'ipv6': 'v6'})."""

    diff_header: str
    scopes: tuple
    saved_files: dict

    def problems(self):
        """Problems with the backend's own parameters (e.g. chain_prefix), before anything is read.

        What the doctor needs of a backend is not a Backend (those detect one flavour and refuse a host
        with rules in two, which the doctor must still diagnose): it is the backend's Diagnosis, built
        from its Engine (iptables: iptables/diagnose.py) - reading every flavour with counters, the walk
        of a packet, counters, where our hooks are, our rules and the saved file."""

    def open(self, scope):
        """The Backend of ``scope``; BackendUnavailable when the host has no tool for it."""

    def open_saved(self, scope, text):
        """(Backend, desired state) of a persisted file of ``scope`` (kvmnet-nat-restore at boot and at
        libvirt events): the backend as the file says its rules were applied (e.g. the iptables flavour);
        RulesetError when the file is not one this backend wrote, BackendUnavailable when the host lacks
        its tool."""
