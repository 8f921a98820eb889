/* The stream worker's pending-log records in C: `freqcap.adapters.stream.state.pack_pending` without the
 * interpreter's per-pair steps. Each commit unit records the states of the pairs it changed (about two per event);
 * in Python that loop was the largest single step left after the row codec (benchmarks/bench_stream.py).
 *
 * Records are `<I n><name><I m><state>`: the name `<base>:s:<level>:<user>\x1f<entity>` (UTF-8), the state
 * `marshal.dumps((buckets, last_imp_us), 2)`, read back by `unpack_pending` and rewritten by the forget script (which
 * reads names only). The state is written here byte for byte as CPython's marshal writes it (version 2: no
 * back-references, so no table of the objects written; CPython's writer still takes anything else). Most of what is
 * left of this function's time is reaching each pair's objects in memory. The Python function stays the reference
 * and the fallback.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <marshal.h>
#include <stdint.h>
#include <string.h>

static PyObject *BUCKETS = NULL, *LAST_IMP = NULL; /* attribute names of PairCounts */

typedef struct {
    char *data;
    Py_ssize_t len, cap;
} buffer_t;

static int reserve(buffer_t *b, Py_ssize_t more) {
    if (b->len + more <= b->cap)
        return 0;
    Py_ssize_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more)
        cap *= 2;
    char *data = PyMem_Realloc(b->data, (size_t)cap);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->data = data;
    b->cap = cap;
    return 0;
}

static int put(buffer_t *b, const char *data, Py_ssize_t n) {
    if (reserve(b, n) < 0)
        return -1;
    memcpy(b->data + b->len, data, (size_t)n);
    b->len += n;
    return 0;
}

static int put_size(buffer_t *b, Py_ssize_t n) {
    if (n > (Py_ssize_t)UINT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "a pending record is larger than 4 GiB");
        return -1;
    }
    uint32_t v = (uint32_t)n;
    unsigned char le[4] = {v & 0xFF, (v >> 8) & 0xFF, (v >> 16) & 0xFF, (v >> 24) & 0xFF};
    return put(b, (const char *)le, 4);
}

static int put_u32(buffer_t *b, uint32_t v) {
    unsigned char le[4] = {v & 0xFF, (v >> 8) & 0xFF, (v >> 16) & 0xFF, (v >> 24) & 0xFF};
    return put(b, (const char *)le, 4);
}

/* `obj` as `marshal.dumps(obj, 2)` writes it, for the types a pair's state holds (tuple, dict, str, int, None):
 * 1 when written, 0 when `obj` holds anything else or an int beyond 64 bits (nothing usable written: the caller
 * then marshals the whole state with CPython's own writer), -1 on error. Version 2 has no back-references, so each
 * object is written where it stands; marshal.loads reads every version. */
static int put_marshal(buffer_t *b, PyObject *obj, int depth) {
    if (depth > 8)
        return 0;
    if (obj == Py_None)
        return put(b, "N", 1) < 0 ? -1 : 1;
    if (PyLong_CheckExact(obj)) {
        int overflow = 0;
        long long x = PyLong_AsLongLongAndOverflow(obj, &overflow);
        if (overflow)
            return 0;
        if (x == -1 && PyErr_Occurred())
            return -1;
        if (x >= INT32_MIN && x <= INT32_MAX)
            return put(b, "i", 1) < 0 || put_u32(b, (uint32_t)(int32_t)x) < 0 ? -1 : 1;
        /* TYPE_LONG: the digit count (negative for a negative int), then |x| in base 2**15, lowest first */
        unsigned long long m = x < 0 ? 0ULL - (unsigned long long)x : (unsigned long long)x;
        unsigned char digits[16];
        int n = 0;
        while (m) {
            digits[2 * n] = m & 0xFF, digits[2 * n + 1] = (m >> 8) & 0x7F;
            m >>= 15, n++;
        }
        return put(b, "l", 1) < 0 || put_u32(b, (uint32_t)(int32_t)(x < 0 ? -n : n)) < 0 ||
                       put(b, (const char *)digits, 2 * n) < 0
                   ? -1
                   : 1;
    }
    if (PyUnicode_CheckExact(obj)) {
        Py_ssize_t n;
        const char *text = PyUnicode_AsUTF8AndSize(obj, &n);
        if (text == NULL) { /* a lone surrogate: marshal's own writer takes it */
            PyErr_Clear();
            return 0;
        }
        return put(b, "u", 1) < 0 || put_size(b, n) < 0 || put(b, text, n) < 0 ? -1 : 1;
    }
    if (PyTuple_CheckExact(obj)) {
        if (put(b, "(", 1) < 0 || put_size(b, PyTuple_GET_SIZE(obj)) < 0)
            return -1;
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(obj); i++) {
            int rc = put_marshal(b, PyTuple_GET_ITEM(obj, i), depth + 1);
            if (rc <= 0)
                return rc;
        }
        return 1;
    }
    if (PyDict_CheckExact(obj)) {
        PyObject *key, *value;
        Py_ssize_t pos = 0;
        if (put(b, "{", 1) < 0)
            return -1;
        while (PyDict_Next(obj, &pos, &key, &value)) {
            int rc = put_marshal(b, key, depth + 1);
            if (rc > 0)
                rc = put_marshal(b, value, depth + 1);
            if (rc <= 0)
                return rc;
        }
        return put(b, "0", 1) < 0 ? -1 : 1;
    }
    return 0;
}

/* A pair's state record: its size, then `marshal.dumps((buckets, last_imp_us), 2)`; -1 on error. */
static int put_state(buffer_t *b, PyObject *buckets, PyObject *last) {
    Py_ssize_t at = b->len;
    if (put_size(b, 0) < 0 || put(b, "(\x02\x00\x00\x00", 5) < 0) /* the size is filled in below */
        return -1;
    int rc = put_marshal(b, buckets, 0);
    if (rc > 0)
        rc = put_marshal(b, last, 0);
    if (rc < 0)
        return -1;
    if (rc == 0) { /* something this writer does not take: CPython's writer, same version */
        b->len = at;
        PyObject *state = PyTuple_Pack(2, buckets, last);
        PyObject *blob = state ? PyMarshal_WriteObjectToString(state, 2) : NULL;
        Py_XDECREF(state);
        if (blob == NULL)
            return -1;
        rc = put_size(b, PyBytes_GET_SIZE(blob));
        if (rc == 0)
            rc = put(b, PyBytes_AS_STRING(blob), PyBytes_GET_SIZE(blob));
        Py_DECREF(blob);
        return rc;
    }
    Py_ssize_t n = b->len - at - 4;
    if (n > (Py_ssize_t)UINT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "a pending record is larger than 4 GiB");
        return -1;
    }
    unsigned char *p = (unsigned char *)b->data + at;
    p[0] = n & 0xFF, p[1] = (n >> 8) & 0xFF, p[2] = (n >> 16) & 0xFF, p[3] = (n >> 24) & 0xFF;
    return 0;
}

/* The length-prefixed name of a pair (memoized in `names`); a new reference. */
static PyObject *record_name(PyObject *head, PyObject *key, PyObject *names) {
    PyObject *name = PyDict_GetItemWithError(names, key);
    if (name != NULL) {
        Py_INCREF(name);
        return name;
    }
    if (PyErr_Occurred())
        return NULL;
    if (!PyTuple_Check(key) || PyTuple_GET_SIZE(key) != 3 || !PyUnicode_Check(PyTuple_GET_ITEM(key, 0)) ||
        !PyUnicode_Check(PyTuple_GET_ITEM(key, 1)) || !PyUnicode_Check(PyTuple_GET_ITEM(key, 2))) {
        PyErr_SetString(PyExc_TypeError, "a pair key is a (level, user, entity) tuple of str");
        return NULL;
    }
    PyObject *text = PyUnicode_FromFormat("%U%U:%U\x1f%U", head, PyTuple_GET_ITEM(key, 0), PyTuple_GET_ITEM(key, 1),
                                          PyTuple_GET_ITEM(key, 2));
    if (text == NULL)
        return NULL;
    PyObject *raw = PyUnicode_AsUTF8String(text);
    Py_DECREF(text);
    if (raw == NULL)
        return NULL;
    Py_ssize_t n = PyBytes_GET_SIZE(raw);
    name = PyBytes_FromStringAndSize(NULL, n + 4);
    if (name != NULL) {
        unsigned char *p = (unsigned char *)PyBytes_AS_STRING(name);
        uint32_t v = (uint32_t)n;
        p[0] = v & 0xFF, p[1] = (v >> 8) & 0xFF, p[2] = (v >> 16) & 0xFF, p[3] = (v >> 24) & 0xFF;
        memcpy(p + 4, PyBytes_AS_STRING(raw), (size_t)n);
        if (PyDict_SetItem(names, key, name) < 0)
            Py_CLEAR(name);
    }
    Py_DECREF(raw);
    return name;
}

/* pack_pending(head: str, keys: list, cache: dict, names: dict) -> bytes
 * The records of the pairs `keys` (their states in `cache`), names under `head` (`<base>:s:`). */
static PyObject *pack_pending(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4 || !PyUnicode_Check(args[0]) || !PyList_Check(args[1]) || !PyDict_Check(args[2]) ||
        !PyDict_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError, "pack_pending(head: str, keys: list, cache: dict, names: dict)");
        return NULL;
    }
    PyObject *head = args[0], *keys = args[1], *cache = args[2], *names = args[3];
    buffer_t b = {NULL, 0, 0};
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(keys); i++) {
        PyObject *key = PyList_GET_ITEM(keys, i);
        PyObject *counts = PyDict_GetItemWithError(cache, key);
        if (counts == NULL) {
            if (!PyErr_Occurred())
                PyErr_SetObject(PyExc_KeyError, key);
            goto fail;
        }
        PyObject *name = record_name(head, key, names);
        if (name == NULL)
            goto fail;
        int rc = put(&b, PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name));
        Py_DECREF(name);
        if (rc < 0)
            goto fail;
        PyObject *buckets = PyObject_GetAttr(counts, BUCKETS);
        PyObject *last = buckets ? PyObject_GetAttr(counts, LAST_IMP) : NULL;
        rc = last ? put_state(&b, buckets, last) : -1;
        Py_XDECREF(buckets);
        Py_XDECREF(last);
        if (rc < 0)
            goto fail;
    }
    PyObject *out = PyBytes_FromStringAndSize(b.data ? b.data : "", b.len);
    PyMem_Free(b.data);
    return out;
fail:
    PyMem_Free(b.data);
    return NULL;
}

static PyMethodDef methods[] = {
    {"pack_pending", (PyCFunction)(void (*)(void))pack_pending, METH_FASTCALL,
     "pack_pending(head, keys, cache, names) -> the pending-log records of the pairs (state.pack_pending)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_pending", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__pending(void) {
    BUCKETS = PyUnicode_InternFromString("buckets");
    LAST_IMP = PyUnicode_InternFromString("last_imp_us");
    if (BUCKETS == NULL || LAST_IMP == NULL)
        return NULL;
    return PyModule_Create(&module);
}
