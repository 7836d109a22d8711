#!/usr/bin/env python3
"""Checks cudarc's CUDA bindings against NVIDIA's real headers, and cuDNN's shipped SMs against
src/backend/cuda/support.rs. Driven by scripts/check-cuda-bindings.sh, which fetches the headers.

bindings: reads cudarc's bindgen `sys` modules (driver, cuBLAS, cuDNN, NVRTC) with the cfg features this
crate selects (Cargo.toml's default CUDA feature, resolved through cudarc's own feature graph), finds
the items our code uses by grepping src/ (direct `sys` names; names in strings too, such as
`driver("cuStreamCreate")`, which label the driver call behind a cudarc safe method; the `result::`
wrappers we call and the `sys` functions inside them; then every type their signatures reach), and
writes one C++ file per module that,
compiled against the headers and run, reports for each
  function: the header's prototype against the binding's, parameter by parameter;
  enum:     the size and signedness of the type, every enumerator's value both ways, and any header
            value the binding lacks (a library handing such a value back is undefined behaviour in
            Rust when the enum flows out of the library);
  struct:   size, alignment, and each field's offset and type;
  alias:    `pub type X = T` against the header's typedef.
No GPU, driver or linking is needed: only declarations are read (decltype, sizeof, offsetof).
`--all` also checks every item of the four modules, as a report on cudarc (never fatal).

sms: lists the SMs of the cubins and PTX in each cuDNN library with cuobjdump and compares the SMs
that can run them with the Refuse rows of support.rs's KNOWN table.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODULES = ["driver", "cublas", "cudnn", "nvrtc"]
# Name shapes each module's items take in our sources (identifiers outside these are not looked up).
PREFIX = {
    "driver": r"(?:cu[A-Z]\w*|CU\w+|CUDA_\w+|CUresult)",
    "cublas": r"(?:cublas\w+|CUBLAS_\w+|libraryPropertyType\w*|cudaDataType\w*|MAJOR_VERSION|MINOR_VERSION|PATCH_LEVEL)",
    "cudnn": r"(?:cudnn\w+|CUDNN_\w+)",
    "nvrtc": r"(?:nvrtc\w+|NVRTC_\w+)",
}

# ----------------------------------------------------------------------------- cfg and features


def cudarc_dir():
    lock = tomllib.loads((ROOT / "Cargo.lock").read_text())
    ver = next(p["version"] for p in lock["package"] if p["name"] == "cudarc")
    home = Path(os.environ.get("CARGO_HOME", Path.home() / ".cargo"))
    hits = sorted(home.glob(f"registry/src/*/cudarc-{ver}"))
    if not hits:
        sys.exit(f"cudarc {ver} source not found under {home}/registry/src: run `cargo fetch` first")
    return ver, hits[0]


def features(cudarc, cuda_feature):
    """cudarc features our build enables: Cargo.toml's dependency features plus the chosen CUDA
    feature (cuda-12 by default), closed over cudarc's own feature graph."""
    ours = tomllib.loads((ROOT / "Cargo.toml").read_text())
    dep = ours["dependencies"]["cudarc"]
    want = set(dep.get("features", []))
    if dep.get("default-features", True):
        want.add("default")
    if cuda_feature in ours["features"]:
        for f in ours["features"][cuda_feature]:
            if f.startswith("cudarc/"):
                want.add(f.split("/", 1)[1])
    else:  # a cudarc feature named directly (cuda-12090): what switching to it would give
        want.add(cuda_feature)
    graph = tomllib.loads((cudarc / "Cargo.toml").read_text())["features"]
    todo, done = list(want), set()
    while todo:
        f = todo.pop()
        if f in done:
            continue
        done.add(f)
        todo += [g for g in graph.get(f, []) if not g.startswith("dep:") and "/" not in g]
    return done


def cfg_true(expr, feats):
    toks = re.findall(r'[a-z_]+|"[^"]*"|[(),=]', expr)
    pos = 0

    def parse():
        nonlocal pos
        t = toks[pos]
        pos += 1
        if t in ("any", "all", "not"):
            assert toks[pos] == "("
            pos += 1
            args = []
            while toks[pos] != ")":
                args.append(parse())
                if toks[pos] == ",":
                    pos += 1
            pos += 1
            return any(args) if t == "any" else all(args) if t == "all" else not args[0]
        if t == "feature":
            assert toks[pos] == "="
            val = toks[pos + 1].strip('"')
            pos += 2
            return val in feats
        return False  # target_os and the like: never used by these modules

    return parse()


# ----------------------------------------------------------------------------- Rust side

CTYPE = {
    "c_void": "void", "c_char": "char", "c_schar": "signed char", "c_uchar": "unsigned char",
    "c_short": "short", "c_ushort": "unsigned short", "c_int": "int", "c_uint": "unsigned int",
    "c_long": "long", "c_ulong": "unsigned long", "c_longlong": "long long",
    "c_ulonglong": "unsigned long long", "c_float": "float", "c_double": "double",
    "usize": "size_t", "isize": "ptrdiff_t", "u8": "uint8_t", "i8": "int8_t", "u16": "uint16_t",
    "i16": "int16_t", "u32": "uint32_t", "i32": "int32_t", "u64": "uint64_t", "i64": "int64_t",
    "f32": "float", "f64": "double", "bool": "bool",
}


def split_top(s, sep=","):
    out, depth, cur = [], 0, ""
    for ch in s:
        if ch in "(<[":
            depth += 1
        elif ch in ")>]":
            depth -= 1
        if ch == sep and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur)
    return [x.strip() for x in out]


def fn_parts(sig):
    """'(a: T, b: U) -> R' → ([T, U], R or 'void')."""
    depth = 0
    for i, ch in enumerate(sig):
        depth += ch == "("
        depth -= ch == ")"
        if depth == 0:
            break
    args = [a.split(":", 1)[1].strip() if re.match(r"^\w+\s*:", a) else a for a in split_top(sig[1:i])]
    rest = sig[i + 1:].strip()
    ret = rest[2:].strip() if rest.startswith("->") else "()"
    return args, ret


RUST_KEYWORDS = {"type", "fn", "ref", "match", "mod", "move", "impl", "loop", "self", "where", "in", "use"}


def cname(f):
    """bindgen writes a C field named like a Rust keyword with a trailing underscore (type → type_)."""
    return f[:-1] if f.endswith("_") and f[:-1] in RUST_KEYWORDS else f


class Unmappable(Exception):
    pass


def cxx(t, names):
    """A Rust binding type as a C++ type built from the helper templates; `names` decides whether a
    named type exists in C (bindgen's own names do not)."""
    t = t.strip()
    if t in ("()", ""):
        return "void"
    if t.startswith("*const "):
        return f"CP<{cxx(t[7:], names)}>"
    if t.startswith("*mut "):
        return f"P<{cxx(t[5:], names)}>"
    m = re.fullmatch(r"\[(.*);\s*(\d+)usize\]", t)
    if m:
        return f"A<{cxx(m.group(1), names)}, {m.group(2)}>"
    m = re.fullmatch(r"(?:::core::option::)?Option<(.*)>", t)
    if m:
        t = m.group(1).strip()
    m = re.fullmatch(r'unsafe extern "C" fn\s*(\(.*)', t)
    if m:
        args, ret = fn_parts(m.group(1))
        return f"F<{', '.join([cxx(ret, names)] + [cxx(a, names) for a in args])}>"
    m = re.fullmatch(r"__BindgenBitfieldUnit<\[u8;\s*(\d+)usize\]>", t)
    if m:
        return f"A<uint8_t, {m.group(1)}>"
    last = t.split("::")[-1]
    if last in CTYPE:
        return CTYPE[last]
    spelled = names(last)
    if not spelled:
        raise Unmappable(last)
    return spelled if isinstance(spelled, str) else last


class Sys:
    """The items of one cudarc sys module that the selected features enable."""

    def __init__(self, path, feats):
        self.fns, self.enums, self.records, self.aliases, self.uses = {}, {}, {}, {}, {}
        self.enum_consts = []  # (enum, name, variant it equals)
        lines = path.read_text().splitlines()
        i, attrs = 0, []
        while i < len(lines):
            ln = lines[i]
            if ln.startswith("#[cfg("):
                attrs.append(ln[6:-2])
                i += 1
                continue
            if ln.startswith("#[") or ln.startswith("#!["):
                i += 1
                continue
            on = all(cfg_true(a, feats) for a in attrs)
            attrs = []
            # the item's extent: to the line where braces balance
            j, depth = i, 0
            while True:
                depth += lines[j].count("{") - lines[j].count("}")
                if depth <= 0 and (lines[j].rstrip().endswith(("}", ";")) or depth < 0):
                    break
                j += 1
            body, start = lines[i:j + 1], i
            i = j + 1
            if not on:
                continue
            m = re.match(r"pub unsafe fn (\w+)(\(.*\))(?: -> (.*?))? \{$", ln)
            if m and not any('extern "C"' in b for b in body):
                continue  # cudarc's own helpers (culib, is_culib_present)
            if m:
                args, _ = fn_parts(m.group(2))
                self.fns[m.group(1)] = (args, m.group(3) or "()")
                continue
            m = re.match(r"pub type (\w+) = (.*);$", ln)
            if m:
                self.aliases[m.group(1)] = m.group(2)
                continue
            m = re.match(r"pub use self::(\w+) as (\w+);$", ln)
            if m:
                self.uses[m.group(2)] = m.group(1)
                continue
            m = re.match(r"pub (struct|union) (\w+) \{", ln)
            if m:
                fields, fattrs = [], []
                for b in body[1:-1]:
                    b = b.strip()
                    if b.startswith("#[cfg("):
                        fattrs.append(b[6:-2])
                        continue
                    fm = re.match(r"pub (\w+): (.*),$", b)
                    if fm and all(cfg_true(a, feats) for a in fattrs):
                        fields.append((fm.group(1), fm.group(2)))
                    fattrs = []
                self.records[m.group(2)] = (m.group(1), fields)
                continue
            m = re.match(r"pub enum (\w+) \{", ln)
            if m:
                rep = next((re.search(r"repr\((\w+)\)", l).group(1) for l in reversed(lines[max(0, start - 4):start])
                            if "#[repr(" in l), "u32")
                vals, vattrs = [], []
                for b in body[1:-1]:
                    b = b.strip()
                    if b.startswith("#[cfg("):
                        vattrs.append(b[6:-2])
                        continue
                    vm = re.match(r"(\w+) = (-?\d+),$", b)
                    if vm and all(cfg_true(a, feats) for a in vattrs):
                        vals.append((vm.group(1), int(vm.group(2))))
                    vattrs = []
                self.enums[m.group(1)] = (rep, vals)
                continue
            m = re.match(r"impl (\w+) \{$", ln)
            if m:
                for b in body[1:-1]:
                    cm = re.match(r"\s*pub const (\w+): \w+ = \w+::(\w+);$", b)
                    if cm:
                        self.enum_consts.append((m.group(1), cm.group(1), cm.group(2)))

    def fn_types(self, name):
        args, ret = self.fns[name]
        return [ret] + args


def type_names(t):
    return re.findall(r"\b[A-Za-z_]\w*\b", re.sub(r'extern "C"|::core::ffi::|::core::option::', " ", t))


def closure(sysm, fns, types):
    """Types reachable from the functions and types given."""
    seen, todo = set(), list(types)
    for f in fns:
        for t in sysm.fn_types(f):
            todo += type_names(t)
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        if n in sysm.uses:
            seen.add(n)
            todo.append(sysm.uses[n])
        elif n in sysm.aliases:
            seen.add(n)
            todo += type_names(sysm.aliases[n])
        elif n in sysm.records:
            seen.add(n)
            for _, ft in sysm.records[n][1]:
                todo += type_names(ft)
        elif n in sysm.enums:
            seen.add(n)
    return seen


def outflowing(sysm, fns):
    """Enums the library writes and we read: return types, and anything behind a *mut parameter
    (through aliases and struct fields)."""
    out, todo = set(), []
    for f in fns:
        args, ret = sysm.fns[f]
        todo += type_names(ret)
        for a in args:
            if "*mut" in a:
                todo += type_names(a)
    seen = set()
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        n = sysm.uses.get(n, n)
        if n in sysm.enums:
            out.add(n)
        elif n in sysm.aliases:
            todo += type_names(sysm.aliases[n])
        elif n in sysm.records:
            for _, ft in sysm.records[n][1]:
                todo += type_names(ft)
    return out


def used_items(cudarc, mods):
    """What src/ uses of each module, by name: {module: (fns, types, via)}; via maps a function
    reached through a cudarc result:: wrapper to that wrapper."""
    src = "\n".join(p.read_text() for p in sorted((ROOT / "src").rglob("*.rs")))
    code = re.sub(r"//[^\n]*", "", src)
    out = {}
    for mod, sysm in mods.items():
        idents = set(re.findall(rf"\b{PREFIX[mod]}\b", code))
        # `use cudarc::cublas::sys::libraryPropertyType as P` then `P::MAJOR_VERSION`: the enum is used
        fns = {n for n in idents if n in sysm.fns}
        types = {n for n in idents if n in sysm.enums or n in sysm.records or n in sysm.aliases or n in sysm.uses}
        variants = {v for _, (_, vals) in sysm.enums.items() for v, _ in vals}
        for e, (_, vals) in sysm.enums.items():
            if any(v in idents for v, _ in vals):
                types.add(e)
        # result:: wrappers: cudarc::<mod>::result::f, or a `result as alias` import then alias::f
        aliases = [m.group(1) for m in re.finditer(rf"cudarc::{mod}::\{{[^}}]*\bresult as (\w+)", code)]
        called = set(re.findall(rf"cudarc::{mod}::result::(\w+)", code))
        for a in aliases:
            called |= set(re.findall(rf"\b{a}::(\w+)", code))
        res = (cudarc / "src" / mod / "result.rs").read_text()
        via = {}
        for w in sorted(called):
            m = re.search(rf"^pub (?:unsafe )?fn {w}\b.*?^}}", res, re.S | re.M)
            if not m and w[:1].isupper():
                continue  # a type (CublasError), not a wrapper
            if not m:
                sys.exit(f"cudarc {mod}::result::{w} not found in {mod}/result.rs")
            for f in re.findall(r"\bsys::(\w+)\s*\(", m.group(0)):
                if f in sysm.fns:
                    fns.add(f)
                    via.setdefault(f, f"result::{w}")
        del variants
        out[mod] = (fns, types, via)
    return out


# ----------------------------------------------------------------------------- header side

CXX_PRELUDE = r"""
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cxxabi.h>
#include <string>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <tuple>
template <class T> using P = T*;
template <class T> using CP = const T*;
template <class T, std::size_t N> using A = T[N];
template <class R, class... X> using F = R (*)(X...);
// 0 same type; 1 same ABI, spelled differently (int vs enum, unsigned long vs unsigned long long);
// 2 pointee const differs; 4 mismatch. Combined with |.
template <class T> constexpr bool intlike = std::is_integral_v<T> || std::is_enum_v<T>;
template <class T, bool = std::is_enum_v<T>> struct sgn { static constexpr bool v = std::is_signed_v<T>; };
template <class T> struct sgn<T, true> { static constexpr bool v = std::is_signed_v<std::underlying_type_t<T>>; };
template <class X, class Y> struct C {
  static constexpr int v = [] {
    if constexpr (std::is_same_v<X, Y>) return 0;
    else if constexpr (std::is_pointer_v<X> && std::is_pointer_v<Y>) {
      using PX = std::remove_pointer_t<X>;
      using PY = std::remove_pointer_t<Y>;
      return C<std::remove_cv_t<PX>, std::remove_cv_t<PY>>::v | (std::is_const_v<PX> != std::is_const_v<PY> ? 2 : 0);
    } else if constexpr (intlike<X> && intlike<Y>)
      return sizeof(X) == sizeof(Y) && sgn<X>::v == sgn<Y>::v ? 1 : 4;
    else return 4;
  }();
};
template <class X, std::size_t N, class Y, std::size_t M> struct C<X[N], Y[M]> {
  static constexpr int v = N == M ? C<X, Y>::v : 4;
};
template <class R1, class... A1, class R2, class... A2> struct C<R1(A1...), R2(A2...)> {
  static constexpr int v = [] {
    if constexpr (sizeof...(A1) != sizeof...(A2)) return 4;
    else return (C<R1, R2>::v | ... | C<A1, A2>::v);
  }();
};
template <class R1, class... A1, class R2, class... A2> struct C<R1(A1...) noexcept, R2(A2...)> : C<R1(A1...), R2(A2...)> {};
template <class T> std::string nm() {
  int s = 0;
  char* d = abi::__cxa_demangle(typeid(T).name(), nullptr, nullptr, &s);
  std::string r = d ? d : typeid(T).name();
  std::free(d);
  if constexpr (std::is_const_v<std::remove_pointer_t<T>> && std::is_pointer_v<T>) {}
  return r;
}
template <class T> struct sig;
template <class R, class... X> struct sig<R (*)(X...)> { using ret = R; using args = std::tuple<X...>; static constexpr std::size_t n = sizeof...(X); };
template <class R, class... X> struct sig<R (*)(X...) noexcept> : sig<R (*)(X...)> {};
template <class H, class B, std::size_t... I> void arg_report(const char* f, std::index_sequence<I...>) {
  ((C<std::tuple_element_t<I, typename sig<H>::args>, std::tuple_element_t<I, typename sig<B>::args>>::v
        ? std::printf("  %s arg %zu: header %s, binding %s (%d)\n", f, I,
                      nm<std::tuple_element_t<I, typename sig<H>::args>>().c_str(),
                      nm<std::tuple_element_t<I, typename sig<B>::args>>().c_str(),
                      C<std::tuple_element_t<I, typename sig<H>::args>, std::tuple_element_t<I, typename sig<B>::args>>::v)
        : 0),
   ...);
}
template <class H, class B> void fn(const char* name) {
  constexpr int v = C<std::remove_pointer_t<H>, std::remove_pointer_t<B>>::v;
  std::printf("fn %s %d\n", name, v);
  if constexpr (v != 0) {
    if constexpr (sig<H>::n != sig<B>::n)
      std::printf("  %s takes %zu arguments in the header, %zu in the binding\n", name, sig<H>::n, sig<B>::n);
    else {
      if constexpr (C<typename sig<H>::ret, typename sig<B>::ret>::v != 0)
        std::printf("  %s returns: header %s, binding %s\n", name, nm<typename sig<H>::ret>().c_str(), nm<typename sig<B>::ret>().c_str());
      arg_report<H, B>(name, std::make_index_sequence<sig<H>::n>{});
    }
  }
}
template <class H, class B> void alias(const char* name) {
  std::printf("alias %s %d\n", name, C<H, B>::v);
  if (C<H, B>::v) std::printf("  %s: header %s, binding %s\n", name, nm<H>().c_str(), nm<B>().c_str());
}
template <class E> void enum_type(const char* name) {
  std::printf("enumtype %s %zu %d\n", name, sizeof(E), (int)sgn<E>::v);
}
"""


def preprocess(includes, incdirs, extra=()):
    hdr = "".join(f'#include "{h}"\n' for h in includes)
    flags = [f"-I{d}" for d in incdirs]
    text = subprocess.run(["g++", "-std=c++17", "-x", "c++", "-E", "-P", "-", *flags, *extra],
                          input=hdr, capture_output=True, text=True, check=True).stdout
    macros = subprocess.run(["g++", "-std=c++17", "-x", "c++", "-E", "-dM", "-", *flags, *extra],
                            input=hdr, capture_output=True, text=True, check=True).stdout
    names = []
    for ln in macros.splitlines():
        m = re.match(r"#define (\w+) (\w[\w()]*)$", ln)  # object-like, to a name: a possible redirect
        if m and not m.group(1).startswith("_"):
            names.append(m.group(1))
    # what each expands to in the end (cuFoo → cuFoo_v2; __CUDA_API_PTSZ(cuFoo) → cuFoo)
    probe = hdr + "".join(f"@@ {n} {n}\n" for n in names)
    out = subprocess.run(["g++", "-std=c++17", "-x", "c++", "-E", "-P", "-", *flags, *extra],
                         input=probe, capture_output=True, text=True, check=True).stdout
    defined = {}
    for ln in out.splitlines():
        m = re.match(r"@@ (\w+) (.*)", ln)
        if m:
            defined[m.group(1)] = m.group(2).strip()
    return hdr, flags, text, defined


def header_index(text):
    """Declared functions, enums with their enumerator names, and record and typedef names."""
    flat = re.sub(r"\s+", " ", text)
    enums = {}
    for m in re.finditer(r"\benum\s+(?:class\s+)?(\w+)?\s*(?::\s*[\w ]+)?\{([^{}]*)\}\s*(\w+)?\s*;", flat):
        names = []
        for el in split_top(m.group(2)):
            em = re.match(r"(\w+)", el)
            if em:
                names.append(em.group(1))
        for key in (m.group(1), m.group(3)):
            if key:
                enums[key] = names
    fns = set(re.findall(r"\b(\w+)\s*\(", flat))
    words = set(re.findall(r"\b\w+\b", flat))
    return fns, enums, words


# ----------------------------------------------------------------------------- generate, run, judge


def generate(mod, sysm, fns, types, hidx, macros, out_enums):
    hfns, henums, words = hidx
    names = lambda n: n in words  # a C name exists in the header
    lines, notes, fails = [CXX_PRELUDE, "int main() {"], [], []
    expect = {}  # enum values to compare after the run
    checked = {"fn": 0, "enum": 0, "record": 0, "field": 0, "alias": 0, "opaque": 0}
    mirrors, mirrored = [], set()

    def spell(n):  # a record bindgen named itself is its rust_ mirror; others are the header's
        if names(n):
            return True
        if n in sysm.records:
            return f"rust_{n}"
        return False

    def mirror(t):
        """`rust_<t>`: the binding's layout of record t, as C++ lays it out (repr(C)); records it
        holds by value first."""
        if t in mirrored:
            return
        kind, fields = sysm.records[t]
        body = []
        for fname, ft in fields:
            for n in type_names(ft):
                if n in sysm.records and "*" not in ft and n != t:
                    mirror(n)
            m = re.fullmatch(r"\[(.*);\s*0usize\]", ft)
            if m:
                body.append(f"  {cxx(m.group(1), spell)} {cname(fname)}[0];")
            else:
                body.append(f"  {cxx(ft, spell)} {cname(fname)};")
        mirrored.add(t)
        mirrors.append(f"{kind} rust_{t} {{\n" + "\n".join(body) + "\n};")

    for f in sorted(fns):
        if f in macros and macros[f] != f:
            fails.append(f"{mod}: {f} is a macro in the header (for {macros[f] or '?'}): the binding loads "
                         f"the symbol {f} itself")
            continue
        if f not in hfns:
            fails.append(f"{mod}: {f} is not declared by the header")
            continue
        try:
            ts = [cxx(t, names) for t in sysm.fn_types(f)]
        except Unmappable as e:
            fails.append(f"{mod}: {f} uses {e}, which the header lacks")
            continue
        lines.append(f'  fn<decltype(&{f}), F<{", ".join(ts)}>>("{f}");')
        checked["fn"] += 1
    for t in sorted(types):
        if t in sysm.uses:
            tgt = sysm.uses[t]
            if names(t) and names(tgt):
                lines.append(f'  alias<{t}, {tgt}>("{t}");')
                checked["alias"] += 1
            elif not names(t):
                notes.append(f"{mod}: {t} (the binding's alias of {tgt}) is not a name in the header")
        elif t in sysm.aliases:
            if not names(t):
                fails.append(f"{mod}: type {t} is not in the header")
                continue
            try:
                lines.append(f'  alias<{t}, {cxx(sysm.aliases[t], names)}>("{t}");')
                checked["alias"] += 1
            except Unmappable as e:
                notes.append(f"{mod}: alias {t} = {sysm.aliases[t]}: {e} is bindgen's own name; not compared")
        elif t in sysm.enums:
            rep, vals = sysm.enums[t]
            if t not in henums:
                fails.append(f"{mod}: enum {t} is not an enum in the header")
                continue
            checked["enum"] += 1
            lines.append(f'  enum_type<{t}>("{t}");')
            expect[t] = (rep, dict(vals), t in out_enums)
            for v in henums[t]:
                lines.append(f'  std::printf("enumerator {t} {v} %lld\\n", (long long){v});')
            for e, c, v in sysm.enum_consts:
                if e == t and c in henums[t]:
                    expect[t][1][c] = dict(vals).get(v)
        elif t in sysm.records:
            kind, fields = sysm.records[t]
            if not fields:
                checked["opaque"] += 1  # an opaque handle: only ever behind a pointer, checked there
                continue
            if not names(t):
                notes.append(f"{mod}: {kind} {t} is bindgen's own name; checked through its parent")
                continue
            try:
                mirror(t)
            except Unmappable as e:
                notes.append(f"{mod}: {t}: field type {e} unknown; not compared")
                continue
            checked["record"] += 1
            lines.append(f'  std::printf("record {t} %zu %zu %zu %zu\\n", sizeof({t}), alignof({t}), '
                         f'sizeof(rust_{t}), alignof(rust_{t}));')
            for fname, ft in fields:
                if fname.startswith("_") or re.fullmatch(r"\[(.*);\s*0usize\]", ft):
                    continue  # bindgen's padding, bitfield units and anonymous members: covered by the size
                fname = cname(fname)
                checked["field"] += 1
                own = any(n in sysm.records and not names(n) for n in type_names(ft))
                code = (f"(sizeof(decltype({t}::{fname})) == sizeof(decltype(rust_{t}::{fname})) ? 0 : 4)" if own
                        else f"C<decltype({t}::{fname}), decltype(rust_{t}::{fname})>::v")
                lines.append(f'  std::printf("field {t}.{fname} %zu %zu %d\\n", offsetof({t}, {fname}), '
                             f'offsetof(rust_{t}, {fname}), {code});')
    fwd = [f"{sysm.records[t][0]} rust_{t};" for t in sorted(mirrored)]
    head = lines[0] + "\n".join(fwd + mirrors) + "\nint main() {\n"
    return (head, lines[2:]), expect, checked, notes, fails


def run_checks(mod, src, hdr, flags, work, expect):
    """Compiles and runs the checks. A check line the compiler rejects (a C++ overload, a type the
    header spells otherwise) is dropped and reported with the compiler's message; then it retries."""
    head, body = src
    body = list(body)
    cpp, exe = work / f"{mod}.cpp", work / mod
    dropped = []
    for _ in range(20):
        text = hdr + head + "\n".join(body) + "\n  return 0;\n}\n"
        cpp.write_text(text)
        first = (hdr + head).count("\n") + 1  # line number of body[0]
        r = subprocess.run(["g++", "-std=c++17", "-w", "-o", str(exe), str(cpp), *flags],
                           capture_output=True, text=True)
        if r.returncode == 0:
            break
        bad = {}
        for m in re.finditer(rf"{re.escape(str(cpp))}:(\d+):\d+: error: (.*)", r.stderr):
            i = int(m.group(1)) - first
            if 0 <= i < len(body) and body[i].strip():
                bad.setdefault(i, m.group(2))
        if not bad:
            return None, [f"{mod}: the check program did not compile:\n" + r.stderr[-6000:]]
        for i, err in sorted(bad.items()):
            what = re.search(r'"(\w+(?: [\w.]+)?)', body[i])
            dropped.append(f"{mod}: not compiled against the header: "
                           f"{what.group(1) if what else body[i].strip()[:80]}: {err}")
            body[i] = ""
    else:
        return None, [f"{mod}: the check program did not compile after 20 tries"]
    outp = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout
    return outp, dropped


def judge(mod, outp, expect, sysm):
    fails, notes = [], []
    got = {}
    lines = outp.splitlines()
    for i, ln in enumerate(lines):
        p = ln.split()
        detail = []
        j = i + 1
        while j < len(lines) and lines[j].startswith("  "):
            detail.append(lines[j].strip())
            j += 1
        if p[0] in ("fn", "alias"):
            v = int(p[2])
            if v & 4:
                fails.append(f"{mod}: {p[0]} {p[1]} differs from the header: " + "; ".join(detail))
            elif v & 2:
                notes.append(f"{mod}: {p[1]}: const differs from the header (same ABI): " + "; ".join(detail))
            elif v & 1:
                notes.append(f"{mod}: {p[1]}: same ABI, spelled differently: " + "; ".join(detail))
        elif p[0] == "enumtype":
            rep = expect[p[1]][0]
            size, signed = int(p[2]), p[3] == "1"
            if size != int(rep[1:]) // 8:
                fails.append(f"{mod}: enum {p[1]} is {size} bytes in the header; the binding says repr({rep})")
            elif signed != (rep[0] == "i"):
                notes.append(f"{mod}: enum {p[1]} is {size} bytes, {'signed' if signed else 'unsigned'} in the "
                             f"header; the binding says repr({rep})")
        elif p[0] == "enumerator":
            got.setdefault(p[1], {})[p[2]] = int(p[3])
        elif p[0] == "record":
            hs, ha, rs, ra = map(int, p[2:])
            if (hs, ha) != (rs, ra):
                fails.append(f"{mod}: {p[1]} is {hs} bytes (align {ha}) in the header, {rs} (align {ra}) in the binding")
        elif p[0] == "field":
            ho, ro, v = map(int, p[2:])
            if ho != ro or v & 4:
                fails.append(f"{mod}: field {p[1]}: header offset {ho}, binding {ro}, type code {v}")
    for e, (rep, want, out) in expect.items():
        have = got.get(e, {})
        for name, val in want.items():
            if name not in have:
                notes.append(f"{mod}: {e}::{name} = {val} is in the binding, not in the header")
            elif have[name] % 2**32 != val % 2**32:
                fails.append(f"{mod}: {e}::{name} is {have[name]} in the header, {val} in the binding")
        extra = sorted(set(have) - set(want), key=lambda n: have[n])
        # values the binding lacks: only harmful where the library can hand one back
        extra_vals = [n for n in extra if have[n] % 2**32 not in {v % 2**32 for v in want.values()}]
        if extra_vals:
            msg = (f"{mod}: {e} has {len(extra_vals)} header value(s) the binding lacks: "
                   + ", ".join(f"{n}={have[n]}" for n in extra_vals[:8]) + (" ..." if len(extra_vals) > 8 else ""))
            if out:
                fails.append(msg + " (the library hands this enum back: such a value is undefined behaviour in Rust)")
            else:
                notes.append(msg + " (we only pass this enum in: harmless)")
    return fails, notes


def bindings(args):
    ver, cudarc = cudarc_dir()
    feats = features(cudarc, args.cuda_feature)
    mods = {m: Sys(cudarc / "src" / m / "sys" / "mod.rs", feats) for m in MODULES}
    print(f"cudarc {ver}, features: {' '.join(sorted(f for f in feats if f not in ('std',)))}")
    used = used_items(cudarc, mods)
    # each module's headers: those cudarc generated it from (its wrapper.h), where the wheels have them
    incs = {}
    for m in MODULES:
        hs = re.findall(r'#include "([^"]+)"', (cudarc / "src" / m / "sys" / "wrapper.h").read_text())
        have = [h for h in hs if any((Path(d) / h).exists() for d in args.include)]
        if len(have) < len(hs):
            print(f"note: {m}: {', '.join(sorted(set(hs) - set(have)))} not in the wheels; its items count as missing")
        incs[m] = have
    tmp = tempfile.TemporaryDirectory(prefix="bindings-", dir=args.work)  # removed at exit
    work = Path(tmp.name)
    known = []
    if args.known and Path(args.known).exists():
        known = [l.split("#")[0].strip() for l in Path(args.known).read_text().splitlines()]
        known = [k for k in known if k]
    all_fails, totals, n_known = [], {}, 0
    for mod in args.module or MODULES:
        sysm = mods[mod]
        if args.all:
            fns = set(sysm.fns)
            types = set(sysm.enums) | set(sysm.records) | set(sysm.aliases) | set(sysm.uses)
            via = {}
        else:
            fns, types, via = used[mod]
            types = types | closure(sysm, fns, types)
        hdr, flags, text, macros = preprocess(incs[mod], args.include)
        hidx = header_index(text)
        src, expect, checked, notes, fails = generate(mod, sysm, fns, types, hidx, macros, outflowing(sysm, fns))
        outp, cfails = run_checks(mod, src, hdr, flags, work, expect)
        fails += cfails
        if outp is not None:
            f2, n2 = judge(mod, outp, expect, sysm)
            fails += f2
            notes += n2
        checked["value"] = sum(len(v[1]) for v in expect.values())
        totals[mod] = checked
        print(f"\n[{mod}] {checked['fn']} functions, {checked['enum']} enums ({checked['value']} "
              f"values), {checked['record']} structs ({checked['field']} fields), {checked['alias']} type aliases, "
              f"{checked['opaque']} opaque handles")
        if not args.all:
            print("  functions: " + ", ".join(f + (f" (via {via[f]})" if f in via else "") for f in sorted(fns)))
        for n in notes:
            print("  note: " + n)
        for f in fails:
            if any(k in f for k in known):
                n_known += 1
                print("  known (cuda-bindings-known.txt): " + f)
            else:
                print("  MISMATCH: " + f)
                all_fails.append(f)
    n = {k: sum(t[k] for t in totals.values()) for k in ("fn", "enum", "value", "record", "field", "alias", "opaque")}
    print(f"\n{'all bindings' if args.all else 'used by src/'}: {n['fn']} functions, {n['enum']} enums "
          f"({n['value']} values), {n['record']} structs ({n['field']} fields), {n['alias']} aliases, "
          f"{n['opaque']} opaque handles; {len(all_fails)} new mismatch(es), {n_known} known")
    # --all is a report on cudarc, not on our code: never fatal
    return 1 if all_fails and not args.all else 0


# ----------------------------------------------------------------------------- SMs


def known_table():
    """support.rs's KNOWN rows as (cudnn_from, cudnn_below, sm_from, sm_below, verdict)."""
    text = (ROOT / "src/backend/cuda/support.rs").read_text()
    consts = {"ANY": 2**32 - 1}
    for m in re.finditer(r"const (\w+): u32 = ([\w:]+);", text):
        consts[m.group(1)] = 2**32 - 1 if "MAX" in m.group(2) else int(m.group(2).replace("_", ""))
    val = lambda s: consts[s] if s in consts else int(s.replace("_", ""))
    rows = []
    for m in re.finditer(r"Known \{(.*?)\n    \}", text.split("pub const KNOWN")[1], re.S):
        f = dict(re.findall(r"(\w+): ([\w:]+),", m.group(1)))
        rows.append((val(f["cudnn_from"]), val(f["cudnn_below"]), val(f["sm_from"]), val(f["sm_below"]),
                     f["verdict"].split("::")[-1]))
    if not rows:
        sys.exit("no KNOWN rows found in support.rs")
    return rows


def verdict(rows, cudnn, sm):
    for a, b, c, d, v in rows:
        if a <= cudnn < b and c <= sm < d:
            return v
    return None


def runs_on(sm, cubins, ptx):
    """Whether code for `sm` is there: a cubin of the same major and no newer minor (arch-specific
    `a` cubins only on their own SM), or PTX the driver can compile for it."""
    for c in cubins:
        base, spec = int(c.rstrip("af")), c[-1] in "af"
        if spec and base == sm:
            return f"sm_{c}"
        if not spec and base // 10 == sm // 10 and base <= sm:
            return f"sm_{c}"
    for p in ptx:
        if int(p.rstrip("af")) <= sm and p[-1] not in "af":
            return f"compute_{p} (PTX, JIT)"
    return None


def sms(args):
    rows = known_table()
    bad = 0
    probe = [70, 72, 75, 80, 86, 89, 90, 100, 120]
    for d in args.cudnn_dir:
        d = Path(d)
        ver = (d / "VERSION").read_text().strip()
        maj, mnr, pat = (int(x) for x in ver.split(".")[:3])
        code = maj * 10000 + mnr * 100 + pat
        print(f"\ncuDNN {ver} ({code}):")
        libs = {}
        for lib in sorted(d.glob("lib/libcudnn*.so*")):
            elf = subprocess.run([args.cuobjdump, "--list-elf", str(lib)], capture_output=True, text=True).stdout
            ptx = subprocess.run([args.cuobjdump, "--list-ptx", str(lib)], capture_output=True, text=True).stdout
            cub = sorted(set(re.findall(r"\.sm_(\d+[af]?)\.cubin", elf)), key=lambda s: int(s.rstrip("af")))
            pt = sorted(set(re.findall(r"\.sm_(\d+[af]?)\.ptx", ptx)), key=lambda s: int(s.rstrip("af")))
            if cub or pt:
                libs[lib.name] = (cub, pt)
                print(f"  {lib.name}: cubin {' '.join('sm_' + c for c in cub) or '-'}; "
                      f"PTX {' '.join('compute_' + p for p in pt) or '-'}")
        if "libcudnn_ops.so.9" not in libs:
            print("  libcudnn_ops.so.9 has no device code listed: cannot judge")
            bad += 1
            continue
        for sm in probe:
            where = runs_on(sm, *libs["libcudnn_ops.so.9"])
            missing = [n for n, (c, p) in libs.items() if n != "libcudnn_ops.so.9" and not runs_on(sm, c, p)]
            v = verdict(rows, code, sm)
            refused = v == "Refuse"
            agree = refused == (where is None)
            if not agree:
                bad += 1
            print(f"  sm_{sm}: libcudnn_ops {'runs ' + where if where else 'has NO code'}; KNOWN: "
                  f"{v or 'no row'}" + ("" if agree else "  <-- DISAGREES with support.rs")
                  + (f"; no code either in {', '.join(missing)}" if missing else ""))
    print(f"\nsupport table vs cuobjdump: {'agree' if not bad else f'{bad} disagreement(s)'}")
    return 1 if bad else 0


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bindings")
    b.add_argument("--include", action="append", required=True, help="header directory (repeat)")
    b.add_argument("--cuda-feature", default="cuda-12", help="this crate's CUDA feature (Cargo.toml)")
    b.add_argument("--all", action="store_true", help="every item of the modules, not just those src/ uses")
    b.add_argument("--work", default=None, help="where the generated C++ goes (a temporary directory in it)")
    b.add_argument("--module", action="append", choices=MODULES, help="only this module (repeat)")
    b.add_argument("--known", help="reviewed findings, one message substring a line (# comments)")
    s = sub.add_parser("sms")
    s.add_argument("--cuobjdump", required=True)
    s.add_argument("cudnn_dir", nargs="+", help="an unpacked nvidia/cudnn with a VERSION file")
    args = ap.parse_args()
    sys.exit(bindings(args) if args.cmd == "bindings" else sms(args))


if __name__ == "__main__":
    main()
