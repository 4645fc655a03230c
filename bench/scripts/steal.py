#!/usr/bin/env python3
"""Usage: bench/scripts/steal.py SECONDS OUT.csv

Samples the host's steal time (/proc/stat, all cores) every 5 ms for SECONDS and writes one line
`unix_ms,ticks` for every sample in which it grew: when the hypervisor ran other guests instead
of this one. bench/run runs it beside the half-rate mix and lines it up with the mix's trace.
"""
import sys
import time


def steal():
    with open("/proc/stat") as stat:
        return int(stat.readline().split()[8])


def main():
    seconds, path = float(sys.argv[1]), sys.argv[2]
    end = time.time() + seconds
    last = steal()
    with open(path, "w") as out:
        out.write("unix_ms,ticks\n")
        while time.time() < end:
            time.sleep(0.005)
            now = steal()
            if now > last:
                out.write(f"{time.time() * 1000:.1f},{now - last}\n")
            last = now


if __name__ == "__main__":
    main()
