#!/usr/bin/env bash
# The architecture check (cheap, no build): run by .ci/run before the tests.
#
# 1. The module stack. src/lib.rs's doc comment lists the top-level modules level by level, bottom up
#    ("N. `a`, `b`: …"). A file of module M may refer (`crate::X`, or `super::` up to the crate root)
#    only to modules on levels below M's; a reference to M's own level or above fails with file:line.
#    Grouped imports (`use crate::{a, b}`) fail too: write one path per module so this check sees it.
#    Comments, doc comments and string literals are not code and are not read. Every `pub mod` of
#    src/lib.rs must be on the list, once.
# 2. Sizes. No source file under src/ over 800 lines (data tables listed in DATA_TABLES below are
#    exempt) and no function body over 150 lines (from its `fn` line to its closing brace). The
#    offenders of the day these rules came are listed in scripts/arch-debt.txt with their sizes as
#    ceilings: one may shrink, never grow; a new offender fails; an entry no longer over the limit
#    fails until its line is deleted. The list is printed as the remaining debt.
#
# Usage: scripts/arch-check.sh            check (exit 1 on any violation)
#        scripts/arch-check.sh --rebaseline  rewrite scripts/arch-debt.txt from today's offenders (for a
#                                            move that renames a file or function; growth shows in its diff)
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 - "$@" <<'PY'
import os
import re
import sys

MAX_FILE_LINES = 800
MAX_FN_LINES = 150
DATA_TABLES = {"src/explain/colormap.rs"}
DEBT_FILE = "scripts/arch-debt.txt"
rebaseline = sys.argv[1:] == ["--rebaseline"]
if sys.argv[1:] and not rebaseline:
    sys.exit("usage: scripts/arch-check.sh [--rebaseline]")
errors = []


def code_only(text):
    """`text` with comments, strings and char literals blanked (newlines kept), so that what remains
    is code: line numbers, braces and paths are those of the source."""
    out = []
    i, n = 0, len(text)

    def blank(s):
        return "".join("\n" if c == "\n" else " " for c in s)

    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(blank(text[i:j]))
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(blank(text[i:j]))
            i = j
        elif re.match(r'b?r(#*)"', text[i:i + 260]) and not (i and (text[i - 1].isalnum() or text[i - 1] == "_")):
            m = re.match(r'b?r(#*)"', text[i:])
            end = '"' + m.group(1)
            j = text.find(end, i + m.end())
            j = n if j < 0 else j + len(end)
            out.append(blank(text[i:j]))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(blank(text[i:j + 1]))
            i = j + 1
        elif c == "'":
            # A char literal ('x', '\n', '\u{..}') or a lifetime ('a): only the former is blanked.
            if i + 1 < n and text[i + 1] == "\\":
                j = text.find("'", i + 2)
                out.append(blank(text[i:j + 1]))
                i = j + 1
            elif i + 2 < n and text[i + 2] == "'":
                out.append("   ")
                i += 3
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


# ---------------------------------------------------------------- the declared stack
lib = open("src/lib.rs", encoding="utf-8").read()
level = {}
for num, rest in re.findall(r"^//! (\d+)\. (.*)$", lib, re.M):
    names = re.findall(r"`(\w+)`", rest.split(":")[0])
    for name in names:
        if name in level:
            errors.append(f"src/lib.rs: module {name} is listed twice in the stack")
        level[name] = int(num)
declared = set(re.findall(r"^pub mod (\w+);", lib, re.M))
if not level:
    errors.append("src/lib.rs: no module stack found in the doc comment (lines `//! N. `module`, …: …`)")
for name in sorted(declared - set(level)):
    errors.append(f"src/lib.rs: module {name} is not on the stack in the doc comment")
for name in sorted(set(level) - declared):
    errors.append(f"src/lib.rs: the stack lists {name}, which is not a module")

files = []
for root, _, names in os.walk("src"):
    files += [os.path.join(root, f) for f in names if f.endswith(".rs")]
files.sort()

MOD_OPEN = re.compile(r"\bmod\s+(\w+)\s*\{")
for path in files:
    parts = path[len("src/"):-len(".rs")].split("/")
    if parts in (["lib"], ["main"]):
        continue
    top = parts[0]
    if parts[-1] == "mod":
        parts = parts[:-1]
    code = code_only(open(path, encoding="utf-8").read())
    inline = []  # (module name, brace depth it opened at)
    depth = 0
    for lineno, line in enumerate(code.split("\n"), 1):
        mod_path = parts + [m for m, _ in inline]
        refs = [(m.group(1), m.start()) for m in re.finditer(r"\bcrate::(\w+)", line)]
        if re.search(r"\bcrate::\{", line):
            errors.append(f"{path}:{lineno}: grouped `crate::{{…}}` import; write one `use crate::module::…` per module")
        for m in re.finditer(r"\b((?:super::)+)(\w+)", line):
            ups = m.group(1).count("super::")
            if ups >= len(mod_path):
                refs.append((m.group(2), m.start()))
        for name, _ in refs:
            if name == top or name not in level or top not in level:
                continue
            if level[name] >= level[top]:
                where = "beside it (same level)" if level[name] == level[top] else "above it"
                errors.append(
                    f"{path}:{lineno}: {top} (level {level[top]}) imports {name} (level {level[name]}), {where}"
                )
        for m in MOD_OPEN.finditer(line):
            inline.append((m.group(1), depth))
        for ch in line:
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                while inline and depth <= inline[-1][1]:
                    inline.pop()

# ---------------------------------------------------------------- sizes
FN = re.compile(r"\bfn\s+(\w+)")


def functions(code):
    """(name, first line, length in lines) of every fn with a body."""
    lines_at = [0]
    for k, ch in enumerate(code):
        if ch == "\n":
            lines_at.append(k + 1)

    def line_of(pos):
        lo, hi = 0, len(lines_at) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if lines_at[mid] <= pos:
                lo = mid
            else:
                hi = mid - 1
        return lo + 1

    found = []
    for m in FN.finditer(code):
        j, nest = m.end(), 0
        while j < len(code):
            ch = code[j]
            if ch in "([":
                nest += 1
            elif ch in ")]":
                nest -= 1
            elif nest == 0 and ch == ";":
                j = -1
                break
            elif nest == 0 and ch == "{":
                break
            j += 1
        if j < 0 or j >= len(code):
            continue
        braces, k = 0, j
        while k < len(code):
            if code[k] == "{":
                braces += 1
            elif code[k] == "}":
                braces -= 1
                if braces == 0:
                    break
            k += 1
        first = line_of(m.start())
        found.append((m.group(1), first, line_of(k) - first + 1))
    return found


offenders = {}  # key -> (size, limit, where)
for path in files:
    text = open(path, encoding="utf-8").read()
    n_lines = text.count("\n") + (0 if text.endswith("\n") or not text else 1)
    if n_lines > MAX_FILE_LINES and path not in DATA_TABLES:
        offenders[("file", path, "-")] = (n_lines, MAX_FILE_LINES, path)
    for name, first, length in functions(code_only(text)):
        if length > MAX_FN_LINES:
            key = ("fn", path, name)
            if key not in offenders or offenders[key][0] < length:
                offenders[key] = (length, MAX_FN_LINES, f"{path}:{first}")

if rebaseline:
    with open(DEBT_FILE, "w", encoding="utf-8") as f:
        f.write("# Size debt: offenders of scripts/arch-check.sh's size rules with their ceilings (lines).\n")
        f.write("# An entry may shrink, never grow; delete its line once it is within the limit.\n")
        f.write("# kind path function ceiling   (kind: file, over 800 lines; fn, a body over 150 lines)\n")
        for (kind, path, name), (size, _, _) in sorted(offenders.items()):
            f.write(f"{kind} {path} {name} {size}\n")
    print(f"arch-check: wrote {len(offenders)} entries to {DEBT_FILE}")

ceilings = {}
if os.path.exists(DEBT_FILE):
    for k, raw in enumerate(open(DEBT_FILE, encoding="utf-8"), 1):
        line = raw.split("#")[0].split()
        if not line:
            continue
        if len(line) != 4 or line[0] not in ("file", "fn") or not line[3].isdigit():
            errors.append(f"{DEBT_FILE}:{k}: expected `file|fn PATH NAME|- CEILING`")
            continue
        ceilings[(line[0], line[1], line[2])] = int(line[3])

debt = []
for key, (size, limit, where) in sorted(offenders.items()):
    kind, path, name = key
    what = path if kind == "file" else f"fn {name} ({where})"
    if key not in ceilings:
        errors.append(f"{where}: {'file' if kind == 'file' else 'fn ' + name} has {size} lines, over the limit of {limit}")
    elif size > ceilings[key]:
        errors.append(f"{where}: {'file' if kind == 'file' else 'fn ' + name} grew to {size} lines, over its recorded ceiling {ceilings[key]}")
    else:
        debt.append(f"  {kind:4} {size:5} / {ceilings[key]:5}  {what}")
for key in sorted(set(ceilings) - set(offenders)):
    kind, path, name = key
    errors.append(f"{DEBT_FILE}: `{kind} {path} {name}` is within the limit now (or gone): delete its line")

print(f"arch-check: module stack of {len(level)} modules on {len(set(level.values()))} levels; size debt "
      f"(lines now / ceiling), limits {MAX_FILE_LINES} per file, {MAX_FN_LINES} per fn:")
print("\n".join(debt) if debt else "  none")
if errors:
    print(f"arch-check: {len(errors)} violation(s):", file=sys.stderr)
    for e in errors:
        print(f"  {e}", file=sys.stderr)
    sys.exit(1)
print("arch-check: ok")
PY
