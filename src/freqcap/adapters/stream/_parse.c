/* The stream worker's message parsing in C, for the common message only: what `parse_message`
 * (freqcap.domain.stream.messages) returns for it, without the interpreter's per-field steps (about 10 % of a
 * worker's CPU in Python: decoding seven fields, the checks, `datetime.fromisoformat` and `timestamp`).
 *
 * `parse_common` accepts a message only when it is sure of the result: bytes keys, exactly the required fields (and
 * `format`), every value ASCII, an event time written as `datetime.isoformat` writes it (`YYYY-MM-DDTHH:MM:SS`,
 * optionally `.ffffff`, then `+HH:MM`, `-HH:MM` or `Z`) in the plausible range. For anything else it answers None,
 * and the caller asks `parse_message`, which names what is wrong (freqcap.adapters.stream.parsing). So a message
 * this function does not understand costs the Python path, never a different answer:
 * tests/unit/adapters/stream/test_parsing.py compares both on random valid and broken messages.
 *
 * The time is computed as Python computes it: exact microseconds since the epoch, divided by 10**6 into a double
 * (correctly rounded, as `int / int` is), times 10**6 and rounded half to even (`round`).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define MAX_ID 256                  /* messages._MAX_ID */
#define TS_MIN 946684800.0          /* messages._TS_MIN: 2000-01-01 */
#define TS_MAX 4102444800.0         /* messages._TS_MAX: 2100-01-01 */
enum { EVENT_ID, EVENT_TYPE, EVENT_TS, USER_ID, ADVERTISER_ID, CAMPAIGN_ID, AD_ID, FORMAT, N_KEYS };
static const char *KEY_NAMES[N_KEYS] = {"event_id",    "event_type",  "event_ts", "user_id",
                                        "advertiser_id", "campaign_id", "ad_id",    "format"};
static PyObject *KEYS[N_KEYS];
static PyObject *KIND_I = NULL, *KIND_C = NULL, *KIND_V = NULL;
static PyTypeObject *EVENT = NULL; /* StreamEvent, set by `configure` */

/* The ASCII bytes of `value`, or NULL (not bytes, not ASCII). */
static const char *ascii_bytes(PyObject *value, Py_ssize_t *len) {
    if (!PyBytes_CheckExact(value))
        return NULL;
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(value);
    Py_ssize_t n = PyBytes_GET_SIZE(value);
    for (Py_ssize_t i = 0; i < n; i++)
        if (p[i] >= 0x80)
            return NULL;
    *len = n;
    return (const char *)p;
}

/* Python's str.isspace() of ASCII text: not empty, every character whitespace (\t \n \v \f \r, \x1c-\x1f, ' '). */
static int all_space(const char *p, Py_ssize_t n) {
    if (n == 0)
        return 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (!(c == ' ' || (c >= 9 && c <= 13) || (c >= 28 && c <= 31)))
            return 0;
    }
    return 1;
}

/* An id field as `_parse_fast` checks it: non-empty, at most MAX_ID characters, not all whitespace. */
static int good_id(const char *p, Py_ssize_t n) {
    return n > 0 && n <= MAX_ID && !all_space(p, n);
}

static int digits(const char *p, int n, int *out) {
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return 0;
        v = v * 10 + (p[i] - '0');
    }
    *out = v;
    return 1;
}

/* Days from 1970-01-01 to y-m-d (proleptic Gregorian; H. Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t y, int m, int d) {
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int days_in_month(int y, int m) {
    static const int dim[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : dim[m - 1];
}

/* `parse_ts` of an isoformat time: 1 and the microseconds in *out, 0 when this form is not handled here. */
static int iso_time(const char *p, Py_ssize_t n, long long *out) {
    int y, mo, d, h, mi, s, frac = 0, oh = 0, om = 0, sign = 1;
    if (n < 20 || p[4] != '-' || p[7] != '-' || p[10] != 'T' || p[13] != ':' || p[16] != ':')
        return 0;
    if (!digits(p, 4, &y) || !digits(p + 5, 2, &mo) || !digits(p + 8, 2, &d) || !digits(p + 11, 2, &h) ||
        !digits(p + 14, 2, &mi) || !digits(p + 17, 2, &s))
        return 0;
    Py_ssize_t i = 19;
    if (p[i] == '.') {
        if (n < i + 7 || !digits(p + i + 1, 6, &frac))
            return 0;
        i += 7;
    }
    if (n - i == 1 && p[i] == 'Z') {
        /* UTC */
    } else if (n - i == 6 && (p[i] == '+' || p[i] == '-') && p[i + 3] == ':') {
        if (!digits(p + i + 1, 2, &oh) || !digits(p + i + 4, 2, &om) || oh > 23 || om > 59)
            return 0;
        sign = p[i] == '-' ? -1 : 1;
    } else {
        return 0;
    }
    if (y < 1 || mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || s > 59)
        return 0;
    int64_t seconds = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s - sign * (oh * 3600 + om * 60);
    int64_t us = seconds * 1000000 + frac;
    double total = (double)us / 1e6; /* exact int -> double (|us| < 2**53 here), correctly rounded division */
    if (!(total >= TS_MIN && total < TS_MAX))
        return 0;
    *out = (long long)rint(total * 1e6);
    return 1;
}

/* A str from ASCII bytes, interned when `intern` (the entity ids: a few thousand, shared by every pair key). */
static PyObject *text(const char *p, Py_ssize_t n, int intern) {
    PyObject *s = PyUnicode_DecodeASCII(p, n, NULL);
    if (s != NULL && intern)
        PyUnicode_InternInPlace(&s);
    return s;
}

/* The event of one message's fields, Py_None when not handled here, NULL on error. */
static PyObject *parse_one(PyObject *fields, PyObject *allowed) {
    if (!PyDict_CheckExact(fields))
        Py_RETURN_NONE;
    Py_ssize_t size = PyDict_GET_SIZE(fields);
    if (size != 7 && size != 8)
        Py_RETURN_NONE;
    const char *v[N_KEYS];
    Py_ssize_t len[N_KEYS];
    for (int k = 0; k < (size == 8 ? N_KEYS : FORMAT); k++) {
        PyObject *value = PyDict_GetItemWithError(fields, KEYS[k]);
        if (value == NULL) {
            if (PyErr_Occurred())
                return NULL;
            Py_RETURN_NONE;
        }
        if ((v[k] = ascii_bytes(value, &len[k])) == NULL)
            Py_RETURN_NONE;
    }
    if (allowed != Py_None) {
        PyObject *format = size == 8 ? text(v[FORMAT], len[FORMAT], 0) : Py_NewRef(Py_None);
        if (format == NULL)
            return NULL;
        int ok = PySequence_Contains(allowed, format);
        Py_DECREF(format);
        if (ok < 0)
            return NULL;
        if (!ok)
            Py_RETURN_NONE;
    }
    static const int ids[5] = {EVENT_ID, USER_ID, ADVERTISER_ID, CAMPAIGN_ID, AD_ID};
    for (int j = 0; j < 5; j++)
        if (!good_id(v[ids[j]], len[ids[j]]))
            Py_RETURN_NONE;
    PyObject *kind = NULL;
    if (len[EVENT_TYPE] == 10 && memcmp(v[EVENT_TYPE], "impression", 10) == 0)
        kind = KIND_I;
    else if (len[EVENT_TYPE] == 5 && memcmp(v[EVENT_TYPE], "click", 5) == 0)
        kind = KIND_C;
    else if (len[EVENT_TYPE] == 10 && memcmp(v[EVENT_TYPE], "conversion", 10) == 0)
        kind = KIND_V;
    long long ts_us;
    if (kind == NULL || !iso_time(v[EVENT_TS], len[EVENT_TS], &ts_us))
        Py_RETURN_NONE;
    PyObject *event = EVENT->tp_alloc(EVENT, 7);
    if (event == NULL)
        return NULL;
    PyObject *items[7] = {
        text(v[EVENT_ID], len[EVENT_ID], 0),         Py_NewRef(kind),
        PyLong_FromLongLong(ts_us),                  text(v[USER_ID], len[USER_ID], 0),
        text(v[ADVERTISER_ID], len[ADVERTISER_ID], 1), text(v[CAMPAIGN_ID], len[CAMPAIGN_ID], 1),
        text(v[AD_ID], len[AD_ID], 1),
    };
    for (int j = 0; j < 7; j++) /* the tuple owns what was made (a NULL slot is skipped by its dealloc) */
        PyTuple_SET_ITEM(event, j, items[j]);
    for (int j = 0; j < 7; j++)
        if (items[j] == NULL) {
            Py_DECREF(event);
            return NULL;
        }
    return event;
}

/* parse_common(messages: list, allowed) -> list: per message (a tuple whose item 1 is its fields) its StreamEvent,
 * or None where `parse_message` must judge it. `allowed`: the allowed formats, or None (any). */
static PyObject *parse_common(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyList_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "parse_common(messages: list, allowed_formats)");
        return NULL;
    }
    if (EVENT == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_parse.configure was not called");
        return NULL;
    }
    PyObject *messages = args[0], *allowed = args[1];
    Py_ssize_t n = PyList_GET_SIZE(messages);
    PyObject *out = PyList_New(n);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *message = PyList_GET_ITEM(messages, i);
        PyObject *event = PyTuple_Check(message) && PyTuple_GET_SIZE(message) >= 2
                              ? parse_one(PyTuple_GET_ITEM(message, 1), allowed)
                              : Py_NewRef(Py_None);
        if (event == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, event);
    }
    return out;
}

static PyObject *configure(PyObject *Py_UNUSED(self), PyObject *cls) {
    if (!PyType_Check(cls) || !PyType_IsSubtype((PyTypeObject *)cls, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "configure(StreamEvent): a named tuple class");
        return NULL;
    }
    Py_INCREF(cls);
    Py_XSETREF(EVENT, (PyTypeObject *)cls);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"configure", configure, METH_O, "configure(StreamEvent): the class of the events made."},
    {"parse_common", (PyCFunction)(void (*)(void))parse_common, METH_FASTCALL,
     "parse_common(messages, allowed_formats) -> per message its StreamEvent, or None (ask parse_message)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_parse", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__parse(void) {
    for (int k = 0; k < N_KEYS; k++)
        if ((KEYS[k] = PyBytes_FromString(KEY_NAMES[k])) == NULL)
            return NULL;
    KIND_I = PyUnicode_InternFromString("i");
    KIND_C = PyUnicode_InternFromString("c");
    KIND_V = PyUnicode_InternFromString("v");
    if (KIND_I == NULL || KIND_C == NULL || KIND_V == NULL)
        return NULL;
    return PyModule_Create(&module);
}
