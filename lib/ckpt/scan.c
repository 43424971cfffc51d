/* Classification of the globals a pickle references, in the manner of
 * picklescan and modelscan (their deny lists are the starting point; the
 * additions below are modules that also run code, spawn processes, load
 * native code, touch the network or files, or load further pickles).
 *
 * dangerous: a whole module (and its submodules) or a listed name:
 *   process/system: os nt posix subprocess _posixsubprocess pty sys
 *     signal multiprocessing _thread thread threading commands popen2
 *   code execution: runpy code codeop importlib types marshal ctypes cffi
 *     pydoc timeit cProfile profile trace bdb pdb zipimport venv pip
 *     torch.hub torch.utils.cpp_extension torch._inductor
 *   files: shutil tempfile pathlib glob; io/_io open, open_code, FileIO
 *   network: socket webbrowser httplib http urllib urllib2 urllib3
 *     requests aiohttp ftplib smtplib telnetlib asyncio
 *   nested pickles: pickle _pickle cPickle dill joblib shelve;
 *     torch.load, torch.serialization.load, torch.storage._load_from_bytes,
 *     numpy.load, numpy.ctypeslib.load_library, pandas.read_pickle
 *   builtins/__builtin__/__builtins__: eval exec execfile compile getattr
 *     setattr delattr apply open file breakpoint __import__ globals locals
 *     vars input reload
 *   call combinators: operator.attrgetter/methodcaller, functools.partial/
 *     reduce
 *   any dotted name reaching through a dunder attribute (protocol 4
 *     qualified names such as "x.__globals__") .
 * safe: collections.OrderedDict; torch._utils._rebuild_tensor(_v2),
 *   _rebuild_parameter(_with_state), _rebuild_from_type,
 *   torch._tensor._rebuild_from_type_v2; every torch.*Storage class (also
 *   torch.cuda.* and torch.storage.*, e.g. UntypedStorage); torch
 *   dtypes, torch.Size, torch.device; numpy.core.multiarray._reconstruct and
 *   scalar, numpy.ndarray, numpy.dtype (numpy._core too); _codecs.encode;
 *   TorchScript's typed containers torch.jit._pickle.build_*list and
 *   restore_type_tag (they return their argument);
 *   plain builtin types (set, frozenset, list, dict, tuple, int, float,
 *   complex, bool, bytes, bytearray, str, slice, range). These construct
 *   data only; the pickle machine interprets the torch ones itself.
 * unknown: everything else (e.g. pytorch_lightning callback classes,
 *   argparse.Namespace): never resolved, reported. */
#include "ckpt/ckpt_internal.h"

#include <string.h>

static bool eq(const char *s, size_t n, const char *lit)
{
    return n == strlen(lit) && memcmp(s, lit, n) == 0;
}

/* module is lit or a submodule of it */
static bool in_module(const char *s, size_t n, const char *lit)
{
    size_t l = strlen(lit);
    return n >= l && memcmp(s, lit, l) == 0 && (n == l || s[l] == '.');
}

static bool in_list(const char *s, size_t n, const char *const *list)
{
    for (size_t i = 0; list[i]; i++)
        if (eq(s, n, list[i]))
            return true;
    return false;
}

static const char *const bad_modules[] = {
    "os", "nt", "posix", "subprocess", "_posixsubprocess", "pty", "sys", "signal",
    "multiprocessing", "_thread", "thread", "threading", "commands", "popen2",
    "runpy", "code", "codeop", "importlib", "types", "marshal", "ctypes", "cffi",
    "pydoc", "timeit", "cProfile", "profile", "trace", "bdb", "pdb", "zipimport",
    "venv", "pip", "torch.hub", "torch.utils.cpp_extension", "torch._inductor",
    "shutil", "tempfile", "pathlib", "glob",
    "socket", "webbrowser", "httplib", "http", "urllib", "urllib2", "urllib3",
    "requests", "aiohttp", "ftplib", "smtplib", "telnetlib", "asyncio",
    "pickle", "_pickle", "cPickle", "dill", "joblib", "shelve", NULL};

static const char *const bad_builtins[] = {
    "eval", "exec", "execfile", "compile", "getattr", "setattr", "delattr", "apply",
    "open", "file", "breakpoint", "__import__", "globals", "locals", "vars", "input",
    "reload", NULL};

static const char *const safe_builtins[] = {
    "set", "frozenset", "list", "dict", "tuple", "int", "float", "complex", "bool",
    "bytes", "bytearray", "str", "slice", "range", NULL};

static const char *const torch_dtypes[] = {
    "float32", "float", "float64", "double", "float16", "half", "bfloat16",
    "complex32", "chalf", "complex64", "cfloat", "complex128", "cdouble", "uint8",
    "int8", "int16", "short", "int32", "int", "int64", "long", "bool", "uint16",
    "uint32", "uint64", "qint8", "quint8", "qint32", "quint4x2", "quint2x4",
    "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz",
    "float8_e8m0fnu", "Size", "device", NULL};

static const char *const torch_rebuild[] = {
    "_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_parameter",
    "_rebuild_parameter_with_state", "_rebuild_from_type", NULL};

st_safety st_ckpt_classify(const char *mod, size_t modn, const char *name, size_t namen)
{
    if (!mod || !name)
        return ST_SAFETY_UNKNOWN;
    /* The first component of a dotted (protocol 4 qualified) name is what
     * gets looked up in the module; later ones are attribute accesses. */
    const char *dot = memchr(name, '.', namen);
    size_t first = dot ? (size_t)(dot - name) : namen;
    if (dot) {
        for (size_t i = first; i + 1 < namen; i++)
            if (name[i] == '.' && name[i + 1] == '_' && i + 2 < namen && name[i + 2] == '_')
                return ST_SAFETY_DANGEROUS;
    }
    for (size_t i = 0; bad_modules[i]; i++)
        if (in_module(mod, modn, bad_modules[i]))
            return ST_SAFETY_DANGEROUS;
    bool builtins = eq(mod, modn, "builtins") || eq(mod, modn, "__builtin__") || eq(mod, modn, "__builtins__");
    if (builtins && in_list(name, first, bad_builtins))
        return ST_SAFETY_DANGEROUS;
    if ((eq(mod, modn, "io") || eq(mod, modn, "_io")) &&
        (eq(name, first, "open") || eq(name, first, "open_code") || eq(name, first, "FileIO")))
        return ST_SAFETY_DANGEROUS;
    if (eq(mod, modn, "operator") && (eq(name, first, "attrgetter") || eq(name, first, "methodcaller")))
        return ST_SAFETY_DANGEROUS;
    if (eq(mod, modn, "functools") && (eq(name, first, "partial") || eq(name, first, "reduce")))
        return ST_SAFETY_DANGEROUS;
    if ((eq(mod, modn, "torch") && eq(name, first, "load")) ||
        (eq(mod, modn, "torch.serialization") && eq(name, first, "load")) ||
        (eq(mod, modn, "torch.storage") && eq(name, first, "_load_from_bytes")) ||
        (eq(mod, modn, "numpy") && eq(name, first, "load")) ||
        in_module(mod, modn, "numpy.ctypeslib") || in_module(mod, modn, "numpy.testing") ||
        (eq(mod, modn, "pandas") && eq(name, first, "read_pickle")) ||
        in_module(mod, modn, "pandas.io.pickle"))
        return ST_SAFETY_DANGEROUS;

    if (dot)
        return ST_SAFETY_UNKNOWN; /* attribute chains are never "safe" */
    if (eq(mod, modn, "collections") && eq(name, namen, "OrderedDict"))
        return ST_SAFETY_SAFE;
    if (eq(mod, modn, "torch._utils") && in_list(name, namen, torch_rebuild))
        return ST_SAFETY_SAFE;
    if (eq(mod, modn, "torch._tensor") && eq(name, namen, "_rebuild_from_type_v2"))
        return ST_SAFETY_SAFE;
    if ((eq(mod, modn, "torch") || eq(mod, modn, "torch.cuda") || eq(mod, modn, "torch.storage")) && namen > 7 &&
        memcmp(name + namen - 7, "Storage", 7) == 0)
        return ST_SAFETY_SAFE;
    if (eq(mod, modn, "torch") && in_list(name, namen, torch_dtypes))
        return ST_SAFETY_SAFE;
    if ((eq(mod, modn, "numpy.core.multiarray") || eq(mod, modn, "numpy._core.multiarray")) &&
        (eq(name, namen, "_reconstruct") || eq(name, namen, "scalar")))
        return ST_SAFETY_SAFE;
    if (eq(mod, modn, "numpy") && (eq(name, namen, "ndarray") || eq(name, namen, "dtype")))
        return ST_SAFETY_SAFE;
    if (eq(mod, modn, "_codecs") && eq(name, namen, "encode"))
        return ST_SAFETY_SAFE;
    if (eq(mod, modn, "torch.jit._pickle") &&
        (eq(name, namen, "build_intlist") || eq(name, namen, "build_tensorlist") ||
         eq(name, namen, "build_doublelist") || eq(name, namen, "build_boollist") ||
         eq(name, namen, "build_genericlist") || eq(name, namen, "restore_type_tag")))
        return ST_SAFETY_SAFE;
    if (builtins && in_list(name, namen, safe_builtins))
        return ST_SAFETY_SAFE;
    return ST_SAFETY_UNKNOWN;
}

const char *st_safety_name(st_safety s)
{
    switch (s) {
    case ST_SAFETY_SAFE: return "safe";
    case ST_SAFETY_UNKNOWN: return "unknown";
    case ST_SAFETY_DANGEROUS: return "dangerous";
    }
    return "unknown";
}
