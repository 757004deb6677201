"""Module dependency check: the modules directly under DIR (its files and folders) must
not import each other in a cycle (ARCHITECTURE.md, "Rooms and their direction").

usage: modcycles.py DIR    (e.g. `src` for the rooms, `src/providers` for one room)

An import is a `crate::a::b::name` path naming a module directly under DIR (DIR is
`crate::a::b`, found from the crate root holding lib.rs or main.rs), a
`crate::a::b::{name, ..}` group, or `super::name` in a file directly under DIR; doc
links count too. Text after the first `#[cfg(test)]` of a file is skipped: tests may
reach anywhere. lib.rs, main.rs and mod.rs are the rooms' parents, not rooms.
Prints the cycles found; exits 1 if there is one.
Copied from the team's hook /work/shared/hooks/modcycles.py, extended to folders.
"""
import os, re, sys

src = os.path.normpath(sys.argv[1])
root = src
while not any(os.path.exists(os.path.join(root, f)) for f in ("lib.rs", "main.rs")):
    parent = os.path.dirname(root)
    if parent == root or not parent:
        sys.exit(f"{src}: no lib.rs or main.rs in it or above it")
    root = parent
prefix = "::".join(["crate"] + [p for p in os.path.relpath(src, root).split(os.sep) if p != "."])

tops = {}
for e in os.listdir(src):
    name = e[:-3] if e.endswith(".rs") else e
    if name in ("lib", "main", "mod"):
        continue
    p = os.path.join(src, e)
    files = [p] if p.endswith(".rs") else [
        os.path.join(d, f) for d, _, fs in os.walk(p) for f in fs if f.endswith(".rs")]
    if files:
        tops.setdefault(name, []).extend(files)

ident = r"([a-z_][a-z0-9_]*)"
single = re.compile(re.escape(prefix) + r"::" + ident + r"\b")
group = re.compile(re.escape(prefix) + r"::\{([^{}]*)\}")
sibling = re.compile(r"(?<![A-Za-z0-9_:])super::" + ident + r"\b")
edges = {m: set() for m in tops}
for m, files in tops.items():
    for f in files:
        text = open(f, encoding="utf-8", errors="replace").read()
        text = text.split("#[cfg(test)]")[0]  # tests may reach anywhere
        found = single.findall(text)
        for g in group.findall(text):
            found += re.findall(r"(?:^|,)\s*" + ident, g)
        # `super::` names a sibling only in a file directly under DIR, or in a folder's mod.rs.
        rel = os.path.relpath(f, src).split(os.sep)
        if len(rel) == 1 or (len(rel) == 2 and rel[1] == "mod.rs"):
            found += sibling.findall(text)
        for t in found:
            if t in tops and t != m:
                edges[m].add(t)

# strongly connected components (Tarjan)
idx, low, st, on, out, n = {}, {}, [], set(), [], [0]
def sc(v):
    idx[v] = low[v] = n[0]; n[0] += 1; st.append(v); on.add(v)
    for w in sorted(edges[v]):
        if w not in idx:
            sc(w); low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], idx[w])
    if low[v] == idx[v]:
        comp = []
        while True:
            w = st.pop(); on.discard(w); comp.append(w)
            if w == v:
                break
        if len(comp) > 1:
            out.append(sorted(comp))
sys.setrecursionlimit(10000)
for v in sorted(tops):
    if v not in idx:
        sc(v)
print(f"{src}: {len(tops)} modules under {prefix}; {len(out)} cycles")
for c in out:
    print("cycle:", " ".join(c))
sys.exit(1 if out else 0)
