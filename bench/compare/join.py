"""Joins the forkd column of make bench's tables from two sides.

usage: join.py BASE-NAME BASE-OUTPUT... -- NEW-OUTPUT...

Prints one markdown row per (scenario, figure): the median of each side's
runs and new/base.
"""
import re
import statistics
import sys

UNIT = {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0, "kB": 1e3, "MB": 1e6, "GB": 1e9}


def value(cell):
    """Returns (number in base units, unit) of a cell like '11.6 ms', or None."""
    m = re.fullmatch(r"\s*([-0-9.,]+)\s*([^\s|]*)\s*", cell)
    if not m:
        return None
    try:
        n = float(m.group(1).replace(",", ""))
    except ValueError:
        return None
    return n * UNIT.get(m.group(2), 1.0), m.group(2)


def rows(paths):
    out = {}
    for path in paths:
        header = None
        for line in open(path, encoding="utf-8", errors="replace"):
            if not line.startswith("|"):
                continue
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if "forkd" in cells and "figure" in cells:
                header = cells
                continue
            if header is None or len(cells) != len(header) or set(cells[0]) <= set("-: "):
                continue
            v = value(cells[header.index("forkd")])
            if v is not None:
                out.setdefault((cells[0], cells[1]), []).append(v)
    return out


def main(argv):
    name, rest = argv[1], argv[2:]
    split = rest.index("--")
    base, new = rows(rest[:split]), rows(rest[split + 1:])
    print(f"| scenario | figure | {name} | working tree | new / base |")
    print("| --- | --- | ---: | ---: | ---: |")
    for key in list(dict.fromkeys(list(base) + list(new))):
        b, n = base.get(key), new.get(key)
        fmt = lambda vs: "—" if not vs else f"{statistics.median(v for v, _ in vs) / UNIT.get(vs[0][1], 1.0):.3g} {vs[0][1]}".strip()
        ratio = "—"
        if b and n:
            mb, mn = statistics.median(v for v, _ in b), statistics.median(v for v, _ in n)
            if mb:
                ratio = f"{mn / mb:.2f}×"
        print(f"| {key[0]} | {key[1]} | {fmt(b)} | {fmt(n)} | {ratio} |")


if __name__ == "__main__":
    main(sys.argv)
