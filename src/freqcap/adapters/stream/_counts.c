/* A commit unit's counting in C: the domain's `pair_keys`, `apply_counts` and `PairCounts.prune` over the unit's
 * applied events (freqcap.domain.stream.batch), without the interpreter's per-event steps. Every applied event
 * counts in three pairs, so this loop ran about three times per event in Python; with the row codec and the pending
 * records compiled it was the largest step left in the worker (benchmarks/bench_stream.py, warm drain).
 *
 * The Python functions stay the reference and the fallback (freqcap.adapters.stream.counting): the results are the
 * same objects and values (tests/unit/adapters/stream/test_counting.py compares them on random units).
 *
 * `apply` checks every event before it changes anything and raises TypeError or OverflowError then (the caller
 * falls back to Python, which takes any int); once it has started changing pairs it raises nothing else but
 * KeyError (a pair not loaded: a bug), RuntimeError (a state that is not a PairCounts) or MemoryError.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

/* freqcap.domain.stream.batch: OK, LEVELS; the StreamEvent fields by position. */
#define OK 0
enum { EVENT_ID, KIND, TS_US, USER_ID, ADVERTISER_ID, CAMPAIGN_ID, AD_ID, N_FIELDS };
static PyObject *LEVEL[3] = {NULL, NULL, NULL}; /* "advertiser", "campaign", "ad" */
static PyObject *BUCKETS = NULL, *LAST_IMP = NULL, *ONE = NULL;

/* The applied events' positions in `events`, after checking both lists; -1 on error (TypeError). */
static Py_ssize_t applied_events(PyObject *events, PyObject *verdicts, Py_ssize_t *out) {
    Py_ssize_t n = PyList_GET_SIZE(events), k = 0;
    if (PyList_GET_SIZE(verdicts) != n) {
        PyErr_SetString(PyExc_TypeError, "events and verdicts differ in length");
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = PyList_GET_ITEM(verdicts, i);
        if (!PyLong_CheckExact(v)) {
            PyErr_SetString(PyExc_TypeError, "a verdict is an int");
            return -1;
        }
        long verdict = PyLong_AsLong(v);
        if (verdict == -1 && PyErr_Occurred())
            return -1;
        if (verdict != OK)
            continue;
        PyObject *ev = PyList_GET_ITEM(events, i);
        if (!PyTuple_Check(ev) || PyTuple_GET_SIZE(ev) < N_FIELDS || !PyUnicode_Check(PyTuple_GET_ITEM(ev, KIND)) ||
            !PyLong_Check(PyTuple_GET_ITEM(ev, TS_US)) || !PyUnicode_Check(PyTuple_GET_ITEM(ev, USER_ID)) ||
            !PyUnicode_Check(PyTuple_GET_ITEM(ev, ADVERTISER_ID)) ||
            !PyUnicode_Check(PyTuple_GET_ITEM(ev, CAMPAIGN_ID)) || !PyUnicode_Check(PyTuple_GET_ITEM(ev, AD_ID))) {
            PyErr_SetString(PyExc_TypeError, "an applied event is a StreamEvent of str fields and an int ts_us");
            return -1;
        }
        out[k++] = i;
    }
    return k;
}

/* unit_keys(events: list, verdicts: list) -> list: the three pairs of every applied event, in order
 * (`pair_keys` of each event whose verdict is OK; repeats kept). */
static PyObject *unit_keys(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyList_Check(args[0]) || !PyList_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "unit_keys(events: list, verdicts: list)");
        return NULL;
    }
    PyObject *events = args[0];
    Py_ssize_t *applied = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(PyList_GET_SIZE(events) + 1));
    if (applied == NULL)
        return PyErr_NoMemory();
    Py_ssize_t n = applied_events(events, args[1], applied);
    PyObject *out = n < 0 ? NULL : PyList_New(3 * n);
    for (Py_ssize_t j = 0; out != NULL && j < n; j++) {
        PyObject *ev = PyList_GET_ITEM(events, applied[j]);
        PyObject *user = PyTuple_GET_ITEM(ev, USER_ID);
        for (int level = 0; level < 3; level++) {
            PyObject *key = PyTuple_Pack(3, LEVEL[level], user, PyTuple_GET_ITEM(ev, ADVERTISER_ID + level));
            if (key == NULL) {
                Py_CLEAR(out);
                break;
            }
            PyList_SET_ITEM(out, 3 * j + level, key);
        }
    }
    PyMem_Free(applied);
    return out;
}

/* A pair state's bucket maps (`PairCounts.buckets`), checked to be a dict; a new reference, NULL on error. */
static PyObject *state_buckets(PyObject *state) {
    PyObject *buckets = PyObject_GetAttr(state, BUCKETS);
    if (buckets != NULL && !PyDict_Check(buckets)) {
        Py_DECREF(buckets);
        PyErr_SetString(PyExc_RuntimeError, "a pair's buckets are not a dict");
        return NULL;
    }
    return buckets;
}

/* Drop the buckets of `state` ending before `horizon` (`PairCounts.prune`); -1 on error. */
static int prune(PyObject *state, PyObject *horizon) {
    PyObject *buckets = state_buckets(state);
    if (buckets == NULL)
        return -1;
    PyObject *kind, *counts, *end, *count;
    Py_ssize_t pos = 0, i;
    int rc = 0;
    while (rc == 0 && PyDict_Next(buckets, &pos, &kind, &counts)) {
        if (!PyDict_Check(counts)) {
            PyErr_SetString(PyExc_RuntimeError, "a pair's bucket counts are not a dict");
            rc = -1;
            break;
        }
        PyObject *old = NULL; /* the ends to drop, collected first: a dict cannot change while it is walked */
        i = 0;
        while (PyDict_Next(counts, &i, &end, &count)) {
            int lt = PyObject_RichCompareBool(end, horizon, Py_LT);
            if (lt < 0 || (lt && ((old == NULL && (old = PyList_New(0)) == NULL) || PyList_Append(old, end) < 0))) {
                rc = -1;
                break;
            }
        }
        for (i = 0; rc == 0 && old != NULL && i < PyList_GET_SIZE(old); i++)
            rc = PyDict_DelItem(counts, PyList_GET_ITEM(old, i));
        Py_XDECREF(old);
    }
    Py_DECREF(buckets);
    return rc;
}

/* Count one applied event in one pair (`apply_counts`' inner step); -1 on error. */
static int count_in(PyObject *state, PyObject *kind, int impression, PyObject *end, PyObject *ts) {
    PyObject *buckets = state_buckets(state);
    if (buckets == NULL)
        return -1;
    PyObject *counts = PyDict_GetItemWithError(buckets, kind); /* borrowed; `buckets[kind]` */
    if (counts == NULL || !PyDict_Check(counts)) {
        if (counts != NULL)
            PyErr_SetString(PyExc_RuntimeError, "a pair's bucket counts are not a dict");
        else if (!PyErr_Occurred())
            PyErr_SetObject(PyExc_KeyError, kind);
        Py_DECREF(buckets);
        return -1;
    }
    PyObject *current = PyDict_GetItemWithError(counts, end);
    PyObject *next = current != NULL ? PyNumber_Add(current, ONE) : PyErr_Occurred() ? NULL : Py_NewRef(ONE);
    int rc = next == NULL ? -1 : PyDict_SetItem(counts, end, next);
    Py_XDECREF(next);
    Py_DECREF(buckets);
    if (rc < 0 || !impression)
        return rc;
    PyObject *last = PyObject_GetAttr(state, LAST_IMP);
    if (last == NULL)
        return -1;
    int later = last == Py_None ? 1 : PyObject_RichCompareBool(ts, last, Py_GT);
    Py_DECREF(last);
    if (later < 0)
        return -1;
    return later ? PyObject_SetAttr(state, LAST_IMP, ts) : 0;
}

/* apply(events: list, verdicts: list, keys: list, cache: dict, bucket_s: int, horizon: int) -> list
 * Count the applied events in their pairs (`keys`: `unit_keys` of the same events; every pair in `cache`), then
 * prune each changed pair's buckets ending before `horizon`; the changed pairs, each once, in first-change order. */
static PyObject *apply(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 6 || !PyList_Check(args[0]) || !PyList_Check(args[1]) || !PyList_Check(args[2]) ||
        !PyDict_Check(args[3]) || !PyLong_Check(args[4]) || !PyLong_Check(args[5])) {
        PyErr_SetString(PyExc_TypeError, "apply(events: list, verdicts: list, keys: list, cache: dict, bucket_s: int, "
                                         "horizon: int)");
        return NULL;
    }
    PyObject *events = args[0], *keys = args[2], *cache = args[3], *horizon = args[5];
    long long width_s = PyLong_AsLongLong(args[4]);
    if (width_s == -1 && PyErr_Occurred())
        return NULL;
    if (width_s <= 0 || width_s > INT64_MAX / 1000000) {
        PyErr_SetString(PyExc_OverflowError, "bucket_s out of range");
        return NULL;
    }
    long long width_us = width_s * 1000000;
    Py_ssize_t n_events = PyList_GET_SIZE(events);
    Py_ssize_t *applied = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(n_events + 1));
    long long *ends = PyMem_Malloc(sizeof(long long) * (size_t)(n_events + 1));
    PyObject *changed = NULL, *out = NULL;
    if (applied == NULL || ends == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t n = applied_events(events, args[1], applied);
    if (n < 0)
        goto done;
    if (PyList_GET_SIZE(keys) != 3 * n) {
        PyErr_SetString(PyExc_TypeError, "keys are not unit_keys of these events");
        goto done;
    }
    /* Every event's bucket first (`bucket_end`: the ceiling of ts / width, times width), so that an event the C
     * integers cannot hold is found before any pair changes. */
    for (Py_ssize_t j = 0; j < n; j++) {
        int overflow = 0;
        long long ts = PyLong_AsLongLongAndOverflow(PyTuple_GET_ITEM(PyList_GET_ITEM(events, applied[j]), TS_US),
                                                    &overflow);
        if (overflow) {
            PyErr_SetString(PyExc_OverflowError, "an event time beyond 64 bits");
            goto done;
        }
        if (ts == -1 && PyErr_Occurred())
            goto done;
        long long q = ts / width_us;
        if (ts % width_us != 0 && ts > 0)
            q += 1;
        ends[j] = q * width_s;
    }
    changed = PyDict_New();
    if (changed == NULL)
        goto done;
    for (Py_ssize_t j = 0; j < n; j++) {
        PyObject *ev = PyList_GET_ITEM(events, applied[j]);
        PyObject *kind = PyTuple_GET_ITEM(ev, KIND), *ts = PyTuple_GET_ITEM(ev, TS_US);
        int impression = PyUnicode_GET_LENGTH(kind) == 1 && PyUnicode_READ_CHAR(kind, 0) == 'i';
        PyObject *end = PyLong_FromLongLong(ends[j]);
        if (end == NULL)
            goto done;
        for (int level = 0; level < 3; level++) {
            PyObject *key = PyList_GET_ITEM(keys, 3 * j + level);
            PyObject *state = PyDict_GetItemWithError(cache, key);
            if (state == NULL) {
                if (!PyErr_Occurred())
                    PyErr_SetObject(PyExc_KeyError, key);
                Py_DECREF(end);
                goto done;
            }
            if (count_in(state, kind, impression, end, ts) < 0 || PyDict_SetItem(changed, key, Py_None) < 0) {
                Py_DECREF(end);
                goto done;
            }
        }
        Py_DECREF(end);
    }
    PyObject *key, *ignored, *state;
    Py_ssize_t pos = 0;
    while (PyDict_Next(changed, &pos, &key, &ignored)) {
        state = PyDict_GetItemWithError(cache, key);
        if (state == NULL || prune(state, horizon) < 0) {
            if (!PyErr_Occurred())
                PyErr_SetObject(PyExc_KeyError, key);
            goto done;
        }
    }
    out = PyDict_Keys(changed);
done:
    Py_XDECREF(changed);
    PyMem_Free(applied);
    PyMem_Free(ends);
    return out;
}

static PyMethodDef methods[] = {
    {"unit_keys", (PyCFunction)(void (*)(void))unit_keys, METH_FASTCALL,
     "unit_keys(events, verdicts) -> the three pairs of every applied event, in order."},
    {"apply", (PyCFunction)(void (*)(void))apply, METH_FASTCALL,
     "apply(events, verdicts, keys, cache, bucket_s, horizon) -> the changed pairs (counted, then pruned)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_counts", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__counts(void) {
    LEVEL[0] = PyUnicode_InternFromString("advertiser");
    LEVEL[1] = PyUnicode_InternFromString("campaign");
    LEVEL[2] = PyUnicode_InternFromString("ad");
    BUCKETS = PyUnicode_InternFromString("buckets");
    LAST_IMP = PyUnicode_InternFromString("last_imp_us");
    ONE = PyLong_FromLong(1);
    if (LEVEL[0] == NULL || LEVEL[1] == NULL || LEVEL[2] == NULL || BUCKETS == NULL || LAST_IMP == NULL || ONE == NULL)
        return NULL;
    return PyModule_Create(&module);
}
