/* The stream worker's per-row work in C: a pair's stream-view values, and the HSET that writes the changed ones.
 *
 * Byte for byte what `freqcap.adapters.feast.stream_push` builds in Python (`StreamRowEncoder.values`,
 * `RedisDirectPusher.prepare_values`), which stays the reference and the fallback: every push still checks a sample
 * of rows against Feast's own conversion, and tests/unit/adapters/feast/test_rowcodec.py compares both on random
 * counters. Why C: the worker's profile is flat over many small steps of dict and bytes handling per changed pair;
 * compiling the same Python (Cython) saved 2-9 %, doing the per-row steps here saves far more
 * (benchmarks/bench_stream.py, `codec python` vs `codec native`).
 *
 * Anything these functions do not handle (an int beyond int64, a non-int key) raises, and the caller falls back to
 * the Python path for that row.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Set once by `configure` from the Python constants (`online_format`), so the bytes come from one home. */
static PyObject *LIST_TAG = NULL;   /* ValueProto int64_list_val tag */
static PyObject *PACKED_TAG = NULL; /* Int64List packed `val` tag */
static PyObject *EMPTY_LIST = NULL; /* the empty list's ValueProto */
static PyObject *NULL_TS = NULL;    /* Feast's null timestamp ValueProto */
static PyObject *TS_TAG = NULL;     /* ValueProto unix_timestamp_val tag */
static PyObject *KINDS[3] = {NULL, NULL, NULL}; /* "i", "c", "v": the order of STREAM_FEATURES */

#define SMALL_ITEMS 16

typedef struct {
    int64_t end;
    int64_t n;
} item_t;

static int put_varint(unsigned char *out, uint64_t n) {
    int i = 0;
    while (n > 0x7F) {
        out[i++] = (unsigned char)((n & 0x7F) | 0x80);
        n >>= 7;
    }
    out[i++] = (unsigned char)n;
    return i;
}

static int cmp_item(const void *a, const void *b) {
    int64_t x = ((const item_t *)a)->end, y = ((const item_t *)b)->end;
    return (x > y) - (x < y);
}

/* `<prefix><n>\r\n` (n >= 0) written at `out`; its length. The RESP lengths of every argument: snprintf's format
 * parsing was 60 % of a row's instructions (valgrind --tool=callgrind on push_rows). */
static int put_len(char *out, char prefix, Py_ssize_t n) {
    char digits[24];
    int k = 0;
    do {
        digits[k++] = (char)('0' + n % 10);
        n /= 10;
    } while (n > 0);
    int i = 0;
    out[i++] = prefix;
    while (k > 0)
        out[i++] = digits[--k];
    out[i++] = '\r';
    out[i++] = '\n';
    return i;
}

/* An Int64List ValueProto around packed varints `body` (the empty list's own encoding when empty). */
static PyObject *wrap_list(const unsigned char *body, Py_ssize_t len) {
    if (len == 0) {
        Py_INCREF(EMPTY_LIST);
        return EMPTY_LIST;
    }
    unsigned char v_inner[10], v_body[10];
    Py_ssize_t tag_packed = PyBytes_GET_SIZE(PACKED_TAG), tag_list = PyBytes_GET_SIZE(LIST_TAG);
    int l_body = put_varint(v_body, (uint64_t)len);
    Py_ssize_t inner = tag_packed + l_body + len;
    int l_inner = put_varint(v_inner, (uint64_t)inner);
    PyObject *out = PyBytes_FromStringAndSize(NULL, tag_list + l_inner + inner);
    if (out == NULL)
        return NULL;
    char *p = PyBytes_AS_STRING(out);
    memcpy(p, PyBytes_AS_STRING(LIST_TAG), tag_list);
    p += tag_list;
    memcpy(p, v_inner, l_inner);
    p += l_inner;
    memcpy(p, PyBytes_AS_STRING(PACKED_TAG), tag_packed);
    p += tag_packed;
    memcpy(p, v_body, l_body);
    p += l_body;
    memcpy(p, body, len);
    return out;
}

/* Both lists of one kind, appended to `out`: bucket ends ascending, then their counts. Like the Python encoder, a
 * single bucket is written as it is; with several, zero counts are left out. */
static int encode_kind(PyObject *buckets, PyObject *out, Py_ssize_t at) {
    if (buckets == NULL || buckets == Py_None || (PyDict_Check(buckets) && PyDict_GET_SIZE(buckets) == 0)) {
        Py_INCREF(EMPTY_LIST);
        Py_INCREF(EMPTY_LIST);
        PyTuple_SET_ITEM(out, at, EMPTY_LIST);
        PyTuple_SET_ITEM(out, at + 1, EMPTY_LIST);
        return 0;
    }
    if (!PyDict_Check(buckets)) {
        PyErr_SetString(PyExc_TypeError, "bucket counts must be a dict");
        return -1;
    }
    Py_ssize_t size = PyDict_GET_SIZE(buckets), pos = 0, k = 0;
    item_t small[SMALL_ITEMS];
    unsigned char small_ends[SMALL_ITEMS * 10], small_counts[SMALL_ITEMS * 10];
    item_t *items = size <= SMALL_ITEMS ? small : PyMem_Malloc(sizeof(item_t) * size);
    unsigned char *ends = NULL, *counts = NULL;
    PyObject *key, *value, *a = NULL, *b = NULL;
    int rc = -1;
    if (items == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    while (PyDict_Next(buckets, &pos, &key, &value)) {
        if (!PyLong_CheckExact(key) || !PyLong_CheckExact(value)) {
            PyErr_SetString(PyExc_TypeError, "bucket ends and counts must be ints");
            goto done;
        }
        items[k].end = PyLong_AsLongLong(key);
        items[k].n = PyLong_AsLongLong(value);
        if (PyErr_Occurred())
            goto done;
        k++;
    }
    if (k > 1)
        qsort(items, (size_t)k, sizeof(item_t), cmp_item);
    ends = k <= SMALL_ITEMS ? small_ends : PyMem_Malloc((size_t)k * 10);
    counts = k <= SMALL_ITEMS ? small_counts : PyMem_Malloc((size_t)k * 10);
    if (ends == NULL || counts == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t le = 0, lc = 0;
    for (Py_ssize_t i = 0; i < k; i++) {
        if (k > 1 && items[i].n == 0)
            continue;
        le += put_varint(ends + le, (uint64_t)items[i].end);
        lc += put_varint(counts + lc, (uint64_t)items[i].n);
    }
    a = wrap_list(ends, le);
    b = a ? wrap_list(counts, lc) : NULL;
    if (b != NULL) { /* the tuple takes both references */
        PyTuple_SET_ITEM(out, at, a);
        PyTuple_SET_ITEM(out, at + 1, b);
        a = b = NULL;
        rc = 0;
    }
done:
    Py_XDECREF(a);
    Py_XDECREF(b);
    if (ends != small_ends)
        PyMem_Free(ends);
    if (counts != small_counts)
        PyMem_Free(counts);
    if (items != small)
        PyMem_Free(items);
    return rc;
}

static int configured(void) {
    if (LIST_TAG == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_rowcodec.configure was not called");
        return 0;
    }
    return 1;
}

/* A pair's seven values (`encode_values`); a new reference. */
static PyObject *encode_state(PyObject *buckets, PyObject *last) {
    if (!PyDict_Check(buckets)) {
        PyErr_SetString(PyExc_TypeError, "buckets must be a dict");
        return NULL;
    }
    /* A tuple, not a list: the worker keeps each pair's last written values, and a tuple of bytes leaves the
     * cyclic GC's lists at its first collection (a list would be walked by every full collection). */
    PyObject *out = PyTuple_New(7);
    if (out == NULL)
        return NULL;
    for (int i = 0; i < 3; i++) {
        if (encode_kind(PyDict_GetItemWithError(buckets, KINDS[i]), out, 2 * i) < 0) {
            Py_DECREF(out);
            return NULL;
        }
    }
    if (last == Py_None) {
        Py_INCREF(NULL_TS);
        PyTuple_SET_ITEM(out, 6, NULL_TS);
        return out;
    }
    long long us = PyLong_AsLongLong(last);
    if (us == -1 && PyErr_Occurred()) {
        Py_DECREF(out);
        return NULL;
    }
    long long second = us / 1000000;
    if (us % 1000000 != 0 && us < 0) /* floor, as Python's // */
        second -= 1;
    unsigned char buf[10];
    int n = put_varint(buf, (uint64_t)second);
    Py_ssize_t tag = PyBytes_GET_SIZE(TS_TAG);
    PyObject *ts = PyBytes_FromStringAndSize(NULL, tag + n);
    if (ts == NULL) {
        Py_DECREF(out);
        return NULL;
    }
    memcpy(PyBytes_AS_STRING(ts), PyBytes_AS_STRING(TS_TAG), tag);
    memcpy(PyBytes_AS_STRING(ts) + tag, buf, n);
    PyTuple_SET_ITEM(out, 6, ts);
    return out;
}

/* encode_values(buckets: dict[str, dict[int, int]], last_imp_us: int | None) -> tuple[bytes, ...] (7 values). */
static PyObject *encode_values(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "encode_values(buckets, last_imp_us)");
        return NULL;
    }
    if (!configured())
        return NULL;
    return encode_state(args[0], args[1]);
}

/* 1 when equal, 0 when not, -1 on error. */
static int same(PyObject *a, PyObject *b) {
    if (a == b)
        return 1;
    if (PyBytes_CheckExact(a) && PyBytes_CheckExact(b)) {
        Py_ssize_t n = PyBytes_GET_SIZE(a);
        return n == PyBytes_GET_SIZE(b) && memcmp(PyBytes_AS_STRING(a), PyBytes_AS_STRING(b), n) == 0;
    }
    return PyObject_RichCompareBool(a, b, Py_EQ);
}

/* hset_command(head, key, fields, ts_value, values, before) -> bytes
 *
 * One HSET as RESP: `head` (`*<n>\r\n$4\r\nHSET\r\n` for a whole row), `key` and `ts_value` already bulk strings,
 * `fields` the bulk field names (the row time's first, then one per value), `values` the encoded values and
 * `before` what was last written for the pair (None: nothing): only the values that differ are written, and the
 * header then counts the arguments. */
static PyObject *build_hset(PyObject *head, PyObject *key, PyObject *fields, PyObject *ts_value, PyObject *values,
                            PyObject *before) {
    if (!PyBytes_Check(head) || !PyBytes_Check(key) || !PyTuple_Check(fields) || !PyBytes_Check(ts_value) ||
        !(PyList_Check(values) || PyTuple_Check(values))) {
        PyErr_SetString(PyExc_TypeError, "hset_command: bytes, bytes, tuple, bytes, list, list | None");
        return NULL;
    }
    Py_ssize_t nv = PySequence_Fast_GET_SIZE(values);
    if (PyTuple_GET_SIZE(fields) != nv + 1) {
        PyErr_SetString(PyExc_ValueError, "hset_command: one field per value, after the time's");
        return NULL;
    }
    if (before != Py_None &&
        (!(PyList_Check(before) || PyTuple_Check(before)) || PySequence_Fast_GET_SIZE(before) != nv)) {
        PyErr_SetString(PyExc_ValueError, "hset_command: `before` must hold one value per value");
        return NULL;
    }
    for (Py_ssize_t i = 0; i <= nv; i++) {
        if (!PyBytes_Check(PyTuple_GET_ITEM(fields, i)) || (i < nv && !PyBytes_Check(PySequence_Fast_GET_ITEM(values, i)))) {
            PyErr_SetString(PyExc_TypeError, "hset_command: fields and values must be bytes");
            return NULL;
        }
    }
    char changed[64];
    if (nv > 64) {
        PyErr_SetString(PyExc_ValueError, "hset_command: at most 64 values");
        return NULL;
    }
    Py_ssize_t n_changed = 0, size = 0;
    for (Py_ssize_t i = 0; i < nv; i++) {
        PyObject *v = PySequence_Fast_GET_ITEM(values, i);
        int eq = before == Py_None ? 0 : same(v, PySequence_Fast_GET_ITEM(before, i));
        if (eq < 0)
            return NULL;
        changed[i] = !eq;
        if (eq)
            continue;
        n_changed++;
        char len_text[32];
        size += PyBytes_GET_SIZE(PyTuple_GET_ITEM(fields, i + 1)) + put_len(len_text, '$', PyBytes_GET_SIZE(v)) +
                PyBytes_GET_SIZE(v) + 2;
    }
    char header[48];
    const char *head_bytes = PyBytes_AS_STRING(head);
    Py_ssize_t head_len = PyBytes_GET_SIZE(head);
    if (before != Py_None && n_changed < nv) { /* fewer arguments than a whole row: the header counts them */
        head_len = put_len(header, '*', 4 + 2 * n_changed);
        memcpy(header + head_len, "$4\r\nHSET\r\n", 10);
        head_len += 10;
        head_bytes = header;
    }
    Py_ssize_t key_len = PyBytes_GET_SIZE(key), ts_field = PyBytes_GET_SIZE(PyTuple_GET_ITEM(fields, 0));
    Py_ssize_t ts_len = PyBytes_GET_SIZE(ts_value);
    PyObject *out = PyBytes_FromStringAndSize(NULL, head_len + key_len + ts_field + ts_len + size);
    if (out == NULL)
        return NULL;
    char *p = PyBytes_AS_STRING(out);
    memcpy(p, head_bytes, head_len);
    p += head_len;
    memcpy(p, PyBytes_AS_STRING(key), key_len);
    p += key_len;
    memcpy(p, PyBytes_AS_STRING(PyTuple_GET_ITEM(fields, 0)), ts_field);
    p += ts_field;
    memcpy(p, PyBytes_AS_STRING(ts_value), ts_len);
    p += ts_len;
    for (Py_ssize_t i = 0; i < nv; i++) {
        if (!changed[i])
            continue;
        PyObject *f = PyTuple_GET_ITEM(fields, i + 1), *v = PySequence_Fast_GET_ITEM(values, i);
        memcpy(p, PyBytes_AS_STRING(f), PyBytes_GET_SIZE(f));
        p += PyBytes_GET_SIZE(f);
        p += put_len(p, '$', PyBytes_GET_SIZE(v));
        memcpy(p, PyBytes_AS_STRING(v), PyBytes_GET_SIZE(v));
        p += PyBytes_GET_SIZE(v);
        *p++ = '\r';
        *p++ = '\n';
    }
    return out;
}

static PyObject *hset_command(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "hset_command(head, key, fields, ts_value, values, before)");
        return NULL;
    }
    return build_hset(args[0], args[1], args[2], args[3], args[4], args[5]);
}

/* `b"$<n>\r\n<raw>\r\n"`; a new reference. */
static PyObject *bulk(PyObject *raw) {
    char len_text[32];
    int head = put_len(len_text, '$', PyBytes_GET_SIZE(raw));
    PyObject *out = PyBytes_FromStringAndSize(NULL, head + PyBytes_GET_SIZE(raw) + 2);
    if (out == NULL)
        return NULL;
    char *p = PyBytes_AS_STRING(out);
    memcpy(p, len_text, head);
    memcpy(p + head, PyBytes_AS_STRING(raw), PyBytes_GET_SIZE(raw));
    memcpy(p + head + PyBytes_GET_SIZE(raw), "\r\n", 2);
    return out;
}

static PyObject *BUCKETS = NULL, *LAST_IMP = NULL, *EXPIRE_HEAD = NULL; /* attribute names; the EXPIRE header */

/* The pair's values: encoded here, or by `fallback(state)` when the state holds what this codec does not take (an
 * int beyond 64 bits), as `StreamRowEncoder.values` does; a new reference. */
static PyObject *pair_values(PyObject *state, PyObject *fallback) {
    PyObject *buckets = PyObject_GetAttr(state, BUCKETS);
    PyObject *last = buckets ? PyObject_GetAttr(state, LAST_IMP) : NULL;
    PyObject *values = last ? encode_state(buckets, last) : NULL;
    Py_XDECREF(buckets);
    Py_XDECREF(last);
    if (values == NULL && (PyErr_ExceptionMatches(PyExc_TypeError) || PyErr_ExceptionMatches(PyExc_OverflowError))) {
        PyErr_Clear();
        values = PyObject_CallOneArg(fallback, state);
    }
    return values;
}

/* Whether this process refreshes the key's TTL now (`RedisDirectPusher._refresh_due`: at most once per `every`
 * seconds, `refreshed` bounded), recording it; -1 on error. */
static int refresh_due(PyObject *refreshed, PyObject *raw_key, PyObject *now, double every) {
    PyObject *when = PyDict_GetItemWithError(refreshed, raw_key);
    if (when == NULL && PyErr_Occurred())
        return -1;
    double last = when == NULL ? -every : PyFloat_AsDouble(when);
    if (last == -1.0 && PyErr_Occurred())
        return -1;
    if (PyFloat_AS_DOUBLE(now) - last < every)
        return 0;
    if (PyDict_GET_SIZE(refreshed) > 2000000)
        PyDict_Clear(refreshed);
    return PyDict_SetItem(refreshed, raw_key, now) < 0 ? -1 : 1;
}

/* push_rows(pairs, cache, written, memo, key_of, packed, ts_value, expire, fallback) -> (commands, keys, values)
 *
 * `RedisDirectPusher.prepare_values` of the pairs' states in `cache`, each encoded here once: per pair the HSET of
 * the values that differ from `written[pair]` (all when absent), then an EXPIRE when due. `memo` maps a pair to its
 * Feast key (`key_of(pair)` on a miss), `packed` a level to (HSET header, bulk field names); `expire` is None or
 * (tail: TTL as a bulk string, refreshed: dict, now: float, every: float); `fallback` encodes a state this codec
 * does not take. Returns the commands, the key of each, and each pair's values (to remember once written). */
static PyObject *push_rows(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 9 || !PyList_Check(args[0]) || !PyDict_Check(args[1]) || !PyDict_Check(args[2]) ||
        !PyDict_Check(args[3]) || !PyDict_Check(args[5]) || !PyBytes_Check(args[6]) ||
        !(args[7] == Py_None || (PyTuple_Check(args[7]) && PyTuple_GET_SIZE(args[7]) == 4))) {
        PyErr_SetString(PyExc_TypeError, "push_rows(pairs: list, cache: dict, written: dict, memo: dict, key_of, "
                                         "packed: dict, ts_value: bytes, expire: tuple | None, fallback)");
        return NULL;
    }
    if (!configured())
        return NULL;
    PyObject *pairs = args[0], *cache = args[1], *written = args[2], *memo = args[3], *key_of = args[4];
    PyObject *packed = args[5], *ts_value = args[6], *expire = args[7], *fallback = args[8];
    PyObject *tail = NULL, *refreshed = NULL, *now = NULL;
    double every = 0;
    if (expire != Py_None) {
        tail = PyTuple_GET_ITEM(expire, 0), refreshed = PyTuple_GET_ITEM(expire, 1);
        now = PyTuple_GET_ITEM(expire, 2), every = PyFloat_AsDouble(PyTuple_GET_ITEM(expire, 3));
        if (!PyBytes_Check(tail) || !PyDict_Check(refreshed) || !PyFloat_Check(now) || PyErr_Occurred()) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "expire: (bytes, dict, float, float)");
            return NULL;
        }
    }
    Py_ssize_t n = PyList_GET_SIZE(pairs);
    PyObject *commands = PyList_New(0), *keys = PyList_New(0), *values_out = PyList_New(n);
    if (commands == NULL || keys == NULL || values_out == NULL)
        goto fail;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *pair = PyList_GET_ITEM(pairs, i);
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 3) {
            PyErr_SetString(PyExc_TypeError, "a pair is a (level, user, entity) tuple");
            goto fail;
        }
        PyObject *state = PyDict_GetItemWithError(cache, pair);
        if (state == NULL) {
            if (!PyErr_Occurred())
                PyErr_SetObject(PyExc_KeyError, pair);
            goto fail;
        }
        PyObject *values = pair_values(state, fallback);
        if (values == NULL)
            goto fail;
        PyList_SET_ITEM(values_out, i, values);
        PyObject *raw_key = PyDict_GetItemWithError(memo, pair);
        if (raw_key != NULL)
            Py_INCREF(raw_key);
        else if (PyErr_Occurred() || (raw_key = PyObject_CallOneArg(key_of, pair)) == NULL)
            goto fail;
        PyObject *layout = PyDict_GetItemWithError(packed, PyTuple_GET_ITEM(pair, 0));
        if (!PyBytes_Check(raw_key) || layout == NULL || !PyTuple_Check(layout) || PyTuple_GET_SIZE(layout) != 2) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "a Feast key is bytes, a level's layout (head, fields)");
            Py_DECREF(raw_key);
            goto fail;
        }
        PyObject *before = PyDict_GetItemWithError(written, pair);
        PyObject *key = PyErr_Occurred() ? NULL : bulk(raw_key);
        PyObject *command = key == NULL ? NULL
                                        : build_hset(PyTuple_GET_ITEM(layout, 0), key, PyTuple_GET_ITEM(layout, 1),
                                                     ts_value, values, before ? before : Py_None);
        int rc = command == NULL ? -1 : PyList_Append(commands, command);
        Py_XDECREF(command);
        if (rc == 0)
            rc = PyList_Append(keys, raw_key);
        if (rc == 0 && tail != NULL && (rc = refresh_due(refreshed, raw_key, now, every)) == 1) {
            PyObject *expire_command = PyBytes_FromStringAndSize(NULL, PyBytes_GET_SIZE(EXPIRE_HEAD) +
                                                                           PyBytes_GET_SIZE(key) + PyBytes_GET_SIZE(tail));
            if (expire_command == NULL) {
                rc = -1;
            } else {
                char *p = PyBytes_AS_STRING(expire_command);
                memcpy(p, PyBytes_AS_STRING(EXPIRE_HEAD), PyBytes_GET_SIZE(EXPIRE_HEAD));
                p += PyBytes_GET_SIZE(EXPIRE_HEAD);
                memcpy(p, PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key));
                memcpy(p + PyBytes_GET_SIZE(key), PyBytes_AS_STRING(tail), PyBytes_GET_SIZE(tail));
                rc = PyList_Append(commands, expire_command);
                Py_DECREF(expire_command);
                if (rc == 0)
                    rc = PyList_Append(keys, raw_key);
            }
        }
        Py_XDECREF(key);
        Py_DECREF(raw_key);
        if (rc < 0)
            goto fail;
    }
    return Py_BuildValue("(NNN)", commands, keys, values_out);
fail:
    Py_XDECREF(commands);
    Py_XDECREF(keys);
    Py_XDECREF(values_out);
    return NULL;
}

static PyObject *configure(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *list_tag, *packed_tag, *empty_list, *null_ts, *ts_tag;
    if (!PyArg_ParseTuple(args, "SSSSS", &list_tag, &packed_tag, &empty_list, &null_ts, &ts_tag))
        return NULL;
    PyObject **slots[] = {&LIST_TAG, &PACKED_TAG, &EMPTY_LIST, &NULL_TS, &TS_TAG};
    PyObject *given[] = {list_tag, packed_tag, empty_list, null_ts, ts_tag};
    for (int i = 0; i < 5; i++) {
        Py_INCREF(given[i]);
        Py_XSETREF(*slots[i], given[i]);
    }
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"configure", configure, METH_VARARGS,
     "configure(list_tag, packed_tag, empty_list, null_ts, ts_tag): the ValueProto constants (online_format)."},
    {"encode_values", (PyCFunction)(void (*)(void))encode_values, METH_FASTCALL,
     "encode_values(buckets, last_imp_us) -> the 7 stream-view values of a pair (StreamRowEncoder.values)."},
    {"hset_command", (PyCFunction)(void (*)(void))hset_command, METH_FASTCALL,
     "hset_command(head, key, fields, ts_value, values, before) -> one HSET of the changed values, as RESP."},
    {"push_rows", (PyCFunction)(void (*)(void))push_rows, METH_FASTCALL,
     "push_rows(pairs, cache, written, memo, key_of, packed, ts_value, expire, fallback) -> (commands, keys, "
     "values): the HSETs (and due EXPIREs) of the pairs' states, each encoded once."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_rowcodec", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__rowcodec(void) {
    const char *kinds[3] = {"i", "c", "v"};
    for (int i = 0; i < 3; i++) {
        KINDS[i] = PyUnicode_InternFromString(kinds[i]);
        if (KINDS[i] == NULL)
            return NULL;
    }
    BUCKETS = PyUnicode_InternFromString("buckets");
    LAST_IMP = PyUnicode_InternFromString("last_imp_us");
    EXPIRE_HEAD = PyBytes_FromString("*3\r\n$6\r\nEXPIRE\r\n");
    if (BUCKETS == NULL || LAST_IMP == NULL || EXPIRE_HEAD == NULL)
        return NULL;
    return PyModule_Create(&module);
}
