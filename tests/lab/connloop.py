"""A bounded client loop: N TCP connects a second for S seconds to ADDRESS:PORT, from the lab's client.

    connloop.py ADDRESS PORT RATE SECONDS [--expect PREFIX]

Each connect waits at most 1 s for the connection and the first line. Prints one JSON object:
{"tries", "ok", "refused", "timeout", "other", "wrong", "first_failures": [...]}. Used by the Molecule
churn test to show that no moment is without our rules (each failure is a missed connection).
"""
import argparse
import json
import socket
import time


def once(address, port):
    try:
        with socket.create_connection((address, port), timeout=1.0) as sock:
            sock.settimeout(1.0)
            return 'ok', sock.recv(200).decode(errors='replace').strip()
    except ConnectionRefusedError:
        return 'refused', ''
    except socket.timeout:
        return 'timeout', ''
    except OSError as exc:
        return 'other', exc.strerror or str(exc)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('address')
    ap.add_argument('port', type=int)
    ap.add_argument('rate', type=float)
    ap.add_argument('seconds', type=float)
    ap.add_argument('--expect', default='')
    args = ap.parse_args()
    counts = {'tries': 0, 'ok': 0, 'refused': 0, 'timeout': 0, 'other': 0, 'wrong': 0}
    failures = []
    start = time.monotonic()
    limit = int(args.rate * args.seconds)          # bounded in count as well as in time
    while counts['tries'] < limit and time.monotonic() - start < args.seconds + 5:
        due = start + counts['tries'] / args.rate
        time.sleep(max(0.0, due - time.monotonic()))
        counts['tries'] += 1
        outcome, answer = once(args.address, args.port)
        if outcome == 'ok' and not answer.startswith(args.expect):
            outcome = 'wrong'
        counts[outcome] += 1
        if outcome != 'ok' and len(failures) < 10:
            failures.append({'at': round(time.monotonic() - start, 2), 'outcome': outcome, 'answer': answer})
    print(json.dumps(dict(counts, first_failures=failures, seconds=round(time.monotonic() - start, 1))))


if __name__ == '__main__':
    main()
