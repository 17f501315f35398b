#!/usr/bin/python3
"""Op counts and self times of two Chrome traces side by side (model_bench --profile DIR writes
DIR/NAME-distil.json and DIR/NAME-reference.json, 5 training steps each).

Usage: profile_ops.py DIR NAME [TOP]
Self time = an event's duration minus that of the events directly nested in it (same thread).
"""
import collections
import json
import sys


def load(path):
    with open(path) as f:
        text = f.read()
    try:
        events = json.loads(text)
    except json.JSONDecodeError:  # LibTorch's writer leaves a trailing comma on some versions
        events = json.loads(text.rstrip().rstrip("]").rstrip().rstrip(",") + "]")
    if isinstance(events, dict):
        events = events.get("traceEvents", [])
    stats = collections.defaultdict(lambda: [0, 0.0])  # name -> [count, self us]
    by_thread = collections.defaultdict(list)
    for e in events:
        if e.get("ph") == "X":
            by_thread[e.get("tid")].append(e)
    for evs in by_thread.values():
        evs.sort(key=lambda e: (e["ts"], -e["dur"]))
        stack = []  # [end, name, child time]
        def close(item):
            stats[item[1]][0] += 1
            stats[item[1]][1] += item[3] - item[2]
        for e in evs:
            start, dur = float(e["ts"]), float(e["dur"])
            while stack and stack[-1][0] <= start:
                close(stack.pop())
            if stack:
                stack[-1][2] += dur
            stack.append([start + dur, e["name"], 0.0, dur])
        while stack:
            close(stack.pop())
    return stats


def main():
    folder, name = sys.argv[1], sys.argv[2]
    top = int(sys.argv[3]) if len(sys.argv) > 3 else 40
    ours, ref = load(f"{folder}/{name}-distil.json"), load(f"{folder}/{name}-reference.json")
    total_o = sum(v[1] for v in ours.values())
    total_r = sum(v[1] for v in ref.values())
    count_o = sum(v[0] for v in ours.values())
    count_r = sum(v[0] for v in ref.values())
    print(f"{name}: 5 steps; distil {count_o} ops, {total_o / 1e3:.1f} ms self; reference {count_r} ops, {total_r / 1e3:.1f} ms self")
    names = sorted(set(ours) | set(ref), key=lambda n: -max(ours.get(n, [0, 0])[1], ref.get(n, [0, 0])[1]))
    print(f"{'op':52} {'n ours':>7} {'ms ours':>8} {'n ref':>7} {'ms ref':>8}")
    for n in names[:top]:
        o, r = ours.get(n, [0, 0.0]), ref.get(n, [0, 0.0])
        print(f"{n[:52]:52} {o[0]:7d} {o[1] / 1e3:8.2f} {r[0]:7d} {r[1] / 1e3:8.2f}")


if __name__ == "__main__":
    main()
