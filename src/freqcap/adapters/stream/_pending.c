/* The stream worker's pending-log records in C: `freqcap.adapters.stream.state.pack_pending` without the
 * interpreter's per-pair steps. Each commit unit records the states of the pairs it changed (about two per event);
 * in Python that loop was the largest single step left after the row codec (benchmarks/bench_stream.py).
 *
 * Records are `<I n><name><I m><state>`: the name `<base>:s:<level>:<user>\x1f<entity>` (UTF-8), the state
 * `marshal.dumps((buckets, last_imp_us))`, read back by `unpack_pending` and rewritten by the forget script (which
 * reads names only). The Python function stays the reference and the fallback.
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
        PyObject *state = last ? PyTuple_Pack(2, buckets, last) : NULL;
        Py_XDECREF(buckets);
        Py_XDECREF(last);
        if (state == NULL)
            goto fail;
        PyObject *blob = PyMarshal_WriteObjectToString(state, Py_MARSHAL_VERSION);
        Py_DECREF(state);
        if (blob == NULL)
            goto fail;
        rc = put_size(&b, PyBytes_GET_SIZE(blob));
        if (rc == 0)
            rc = put(&b, PyBytes_AS_STRING(blob), PyBytes_GET_SIZE(blob));
        Py_DECREF(blob);
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
