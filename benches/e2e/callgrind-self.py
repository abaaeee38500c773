#!/usr/bin/env python3
"""Self cost (instructions) per function of a callgrind dump, top N: callgrind-self.py FILE [N].

callgrind_annotate 3.19 attributes everything to `clone` for dumps taken with callgrind_control -d
from a multi-threaded Rust binary; this reads the format directly (name compression, calls= lines)."""
import re, sys, collections

names, cost = {}, collections.Counter()
fn = None
skip_next = False
for line in open(sys.argv[1], errors='replace'):
    line = line.rstrip('\n')
    m = re.match(r'^fn=\((\d+)\)(?: (.*))?$', line)
    if m:
        if m.group(2):
            names[m.group(1)] = m.group(2)
        fn = m.group(1)
        continue
    m = re.match(r'^c?fn=\((\d+)\) (.*)$', line) or re.match(r'^cfn=\((\d+)\) (.*)$', line)
    if m:
        names[m.group(1)] = m.group(2)
        continue
    if line.startswith('calls='):
        skip_next = True
        continue
    if line and (line[0].isdigit() or line[0] in '+-*'):
        if skip_next:
            skip_next = False
            continue
        parts = line.split()
        if len(parts) >= 2 and fn is not None:
            try:
                cost[fn] += int(parts[1])
            except ValueError:
                pass
total = sum(cost.values())
n = int(sys.argv[2]) if len(sys.argv) > 2 else 40
print(f'total {total:,}')
for k, v in cost.most_common(n):
    print(f'{v:>14,} {100*v/total:5.1f}%  {names.get(k, k)[:150]}')
