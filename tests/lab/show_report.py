"""Print the kvmnet.nat.verify report (verify_report=FILE) as the demo's table."""
import json
import sys


def main(path):
    with open(path) as handle:
        rows = json.load(handle)
    table = [('hypervisor', 'guest', 'public address:port -> guest port', 'reachable', 'guest saw client as', 'time')]
    for row in rows:
        mark = {True: '\u2714', False: '\u2718', None: '?'}[row['reachable']]
        answer = row['answer'].split()
        seen = answer[1] if len(answer) == 2 and answer[0] == row['guest'] else (row['answer'] or row['error'])
        table.append((row['hypervisor'], row['guest'],
                      f"{row['proto']} {row['public_ip']}:{row['port']} -> {row['guest_port']}",
                      mark, seen, f"{round(row['elapsed'] * 1000)} ms"))
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    print()
    for n, line in enumerate(table):
        print('  '.join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())
        if n == 0:
            print('  '.join('-' * width for width in widths))
    failed = sum(row['reachable'] is False for row in rows)
    print(f'\n{len(rows) - failed} of {len(rows)} public ports answered from the client'
          + (f'; {failed} did not' if failed else ''))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1]))
