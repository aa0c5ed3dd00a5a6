/* JSON lines for the file sink (streams/sinks/files.py): one object per row, written straight
 * from the decoded rows.
 *
 * Building a dict per log line and encoding it with orjson took about 1 µs a line, more than
 * decoding the log. The bytes are orjson's for every value a row holds: str (UTF-8, with
 * orjson's escapes), int within 64 bits, float (the shortest repr, non-finite as null), bool,
 * None, dicts with str keys, lists and tuples.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#include "buffer.h"

#define MAX_DEPTH 64

static const char HEX[] = "0123456789abcdef";

static int put_str(Buf *b, PyObject *s) {
    Py_ssize_t n;
    const char *utf8 = PyUnicode_AsUTF8AndSize(s, &n);
    if (!utf8) return -1;
    if (grow(b, 2 + 6 * (size_t)n) < 0) return -1; /* every byte escaped, at most */
    char *out = b->data + b->len;
    *out++ = '"';
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)utf8[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            *out++ = (char)c;
            continue;
        }
        *out++ = '\\';
        switch (c) {
        case '"': *out++ = '"'; break;
        case '\\': *out++ = '\\'; break;
        case '\b': *out++ = 'b'; break;
        case '\t': *out++ = 't'; break;
        case '\n': *out++ = 'n'; break;
        case '\f': *out++ = 'f'; break;
        case '\r': *out++ = 'r'; break;
        default:
            memcpy(out, "u00", 3);
            out[3] = HEX[c >> 4];
            out[4] = HEX[c & 15];
            out += 5;
        }
    }
    *out++ = '"';
    b->len = (size_t)(out - b->data);
    return 0;
}

static int put_int(Buf *b, PyObject *v) {
    int overflow;
    long long n = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (n == -1 && PyErr_Occurred()) return -1;
    char digits[24];
    int len;
    if (!overflow) {
        len = snprintf(digits, sizeof digits, "%lld", n);
    } else {
        unsigned long long u = overflow > 0 ? PyLong_AsUnsignedLongLong(v) : 0;
        if (overflow < 0 || (u == (unsigned long long)-1 && PyErr_Occurred())) {
            PyErr_Clear();
            PyErr_SetString(PyExc_OverflowError, "a file line holds an int outside 64 bits");
            return -1;
        }
        len = snprintf(digits, sizeof digits, "%llu", u);
    }
    return put(b, digits, (size_t)len);
}

/* The shortest repr, as orjson writes it: "1e-7" where Python writes "1e-07", and
 * "0.000015" where Python writes "1.5e-05" (orjson keeps decimals down to 1e-5). */
static int put_float(Buf *b, double d) {
    if (!Py_IS_FINITE(d)) return put(b, "null", 4);
    char *repr = PyOS_double_to_string(d, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    if (!repr) return -1;
    char *e = strchr(repr, 'e');
    int failed;
    if (e && !strcmp(e, "e-05")) {
        char decimal[40] = "-0.0000";
        char *out = decimal + 7;
        for (char *c = repr + (repr[0] == '-'); c < e; c++)
            if (*c != '.') *out++ = *c;
        Py_ssize_t start = repr[0] == '-' ? 0 : 1;
        failed = put(b, decimal + start, (size_t)(out - decimal - start)) < 0;
    } else if (e && (e[1] == '-' || e[1] == '+') && e[2] == '0') {
        char *digits = e + 2;
        while (*digits == '0' && digits[1]) digits++;
        failed = put(b, repr, (size_t)(e + 2 - repr)) < 0 || put(b, digits, strlen(digits)) < 0;
    } else {
        failed = put(b, repr, strlen(repr)) < 0;
    }
    PyMem_Free(repr);
    return failed ? -1 : 0;
}

static int put_value(Buf *b, PyObject *v, int depth);

static int put_items(Buf *b, PyObject *const *items, Py_ssize_t n, int depth) {
    if (put(b, "[", 1) < 0) return -1;
    for (Py_ssize_t i = 0; i < n; i++)
        if ((i && put(b, ",", 1) < 0) || put_value(b, items[i], depth + 1) < 0) return -1;
    return put(b, "]", 1);
}

static int put_dict(Buf *b, PyObject *d, int depth) {
    if (put(b, "{", 1) < 0) return -1;
    Py_ssize_t pos = 0, i = 0;
    PyObject *key, *value;
    while (PyDict_Next(d, &pos, &key, &value)) {
        if (!PyUnicode_Check(key)) {
            PyErr_Format(PyExc_TypeError, "a file line's keys must be str, not %.100s", Py_TYPE(key)->tp_name);
            return -1;
        }
        if ((i++ && put(b, ",", 1) < 0) || put_str(b, key) < 0 || put(b, ":", 1) < 0 || put_value(b, value, depth + 1) < 0)
            return -1;
    }
    return put(b, "}", 1);
}

static int put_value(Buf *b, PyObject *v, int depth) {
    if (depth > MAX_DEPTH) {
        PyErr_SetString(PyExc_ValueError, "a file line is nested more than 64 deep");
        return -1;
    }
    if (PyUnicode_Check(v)) return put_str(b, v);
    if (v == Py_None) return put(b, "null", 4);
    if (v == Py_True) return put(b, "true", 4);
    if (v == Py_False) return put(b, "false", 5);
    if (PyLong_Check(v)) return put_int(b, v);
    if (PyFloat_Check(v)) return put_float(b, PyFloat_AS_DOUBLE(v));
    if (PyDict_Check(v)) return put_dict(b, v, depth);
    /* Only str and dict keys are looked at on the way, and neither runs Python code: the items
     * can be read in place. */
    if (PyList_Check(v)) return put_items(b, ((PyListObject *)v)->ob_item, PyList_GET_SIZE(v), depth);
    if (PyTuple_Check(v)) return put_items(b, ((PyTupleObject *)v)->ob_item, PyTuple_GET_SIZE(v), depth);
    PyErr_Format(PyExc_TypeError, "a file line cannot hold %.100s", Py_TYPE(v)->tp_name);
    return -1;
}

/* A field of a line: the index of its value in a row, and where its `"name":` (after a comma
 * but for the first) lies in the rendered keys, written once per call rather than per row. */
typedef struct {
    Py_ssize_t at;
    size_t start, len;
} field_t;

/* One row's line, its values named by fields. */
static int put_row(Buf *b, PyObject *row, const field_t *fields, Py_ssize_t nfields, const char *keys) {
    if (!(PyList_Check(row) || PyTuple_Check(row))) {
        PyErr_Format(PyExc_TypeError, "a row must be a list or tuple, not %.100s", Py_TYPE(row)->tp_name);
        return -1;
    }
    PyObject **values = PyList_Check(row) ? ((PyListObject *)row)->ob_item : ((PyTupleObject *)row)->ob_item;
    Py_ssize_t width = Py_SIZE(row);
    if (put(b, "{", 1) < 0) return -1;
    for (Py_ssize_t i = 0; i < nfields; i++) {
        Py_ssize_t at = fields[i].at;
        if (at < 0 || at >= width) {
            PyErr_Format(PyExc_IndexError, "a row of %zd values has no value %zd", width, at);
            return -1;
        }
        if (put(b, keys + fields[i].start, fields[i].len) < 0 || put_value(b, values[at], 1) < 0) return -1;
    }
    return put(b, "}\n", 2);
}

/* The fields (a tuple of ("name", index) pairs) as field_t, their keys rendered into keys;
 * NULL with an exception set if they are not such a tuple. */
static field_t *parse_fields(PyObject *fields, Buf *keys) {
    int valid = PyTuple_Check(fields);
    for (Py_ssize_t i = 0; valid && i < PyTuple_GET_SIZE(fields); i++) {
        PyObject *f = PyTuple_GET_ITEM(fields, i);
        valid = PyTuple_Check(f) && PyTuple_GET_SIZE(f) == 2 && PyUnicode_Check(PyTuple_GET_ITEM(f, 0)) &&
                PyLong_Check(PyTuple_GET_ITEM(f, 1));
    }
    if (!valid) {
        PyErr_SetString(PyExc_TypeError, "fields must be a tuple of (name, index) pairs, or None");
        return NULL;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(fields);
    field_t *parsed = PyMem_Malloc(sizeof(field_t) * (size_t)(n ? n : 1));
    if (!parsed) {
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *f = PyTuple_GET_ITEM(fields, i);
        parsed[i].at = PyLong_AsSsize_t(PyTuple_GET_ITEM(f, 1));
        parsed[i].start = keys->len;
        if ((parsed[i].at == -1 && PyErr_Occurred()) || (i && put(keys, ",", 1) < 0) ||
            put_str(keys, PyTuple_GET_ITEM(f, 0)) < 0 || put(keys, ":", 1) < 0) {
            PyMem_Free(parsed);
            return NULL;
        }
        parsed[i].len = keys->len - parsed[i].start;
    }
    return parsed;
}

PyDoc_STRVAR(lines_doc,
    "lines(rows, fields, /) -> bytes\n\n"
    "One JSON object per row, each ended by a newline. With ``fields`` (a tuple of\n"
    "``(name, index)`` pairs), a row is a list or tuple and its object holds the values at those\n"
    "indexes under those names; with None, a row is a dict and is written as it is.");

static PyObject *lines(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "lines() takes 2 arguments");
        return NULL;
    }
    PyObject *rows = PySequence_Fast(args[0], "rows must be a sequence");
    if (!rows) return NULL;
    Buf b = {NULL, 0, 0}, keys = {NULL, 0, 0};
    field_t *fields = NULL;
    Py_ssize_t nfields = 0;
    PyObject *out = NULL;
    if (args[1] != Py_None) {
        if (!(fields = parse_fields(args[1], &keys))) goto done;
        nfields = PyTuple_GET_SIZE(args[1]);
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(rows);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *row = PySequence_Fast_GET_ITEM(rows, i);
        int failed;
        if (fields) {
            failed = put_row(&b, row, fields, nfields, keys.data) < 0;
        } else if (PyDict_Check(row)) {
            failed = put_dict(&b, row, 1) < 0 || put(&b, "\n", 1) < 0;
        } else {
            PyErr_Format(PyExc_TypeError, "without fields a row must be a dict, not %.100s", Py_TYPE(row)->tp_name);
            failed = 1;
        }
        if (failed) goto done;
    }
    out = PyBytes_FromStringAndSize(b.data, (Py_ssize_t)b.len);
done:
    PyMem_Free(b.data);
    PyMem_Free(keys.data);
    PyMem_Free(fields);
    Py_DECREF(rows);
    return out;
}

static PyMethodDef methods[] = {
    {"lines", (PyCFunction)(void (*)(void))lines, METH_FASTCALL, lines_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_jsonl", "JSON lines for the file sink.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__jsonl(void) { return PyModule_Create(&module); }
