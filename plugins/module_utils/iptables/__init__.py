# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The iptables backend of kvmnet.nat (nf_tables and legacy flavours): PRIVATE to this collection, no stable API.

Every line of iptables text is written or read in this package, and nowhere else:

- rules.py      forwards -> the rules of our chains and our jumps (Desired); what is ours
- save.py       iptables-save text -> tables, targets, destinations, counters
- walk.py       a packet through iptables rules, as the kernel would (the doctor, the tests)
- grammar.py    the grammar every payload is checked against before iptables-restore sees it
- plan.py       live tables + Desired -> Plan (one iptables-restore --noflush payload)
- persisted.py  the saved file for boot (header, checksum) and the desired state it describes
- netfilter.py  flavour detection, *-save, *-restore [--test] (the only module that runs commands)
- backend.py    the Engine and Backend of _backend.py, for the converge driver (_converge.py)
- diagnose.py   what the doctor asks of the backend (Diagnosis): reading both flavours with counters, the
                walk, counters, hooks, our rules, the saved file
"""
