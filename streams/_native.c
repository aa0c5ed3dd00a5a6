/* Column lists to ClickHouse's Native format for the ClickHouse sink (streams/native.py): the
 * bytes clickhouse-connect's column writers make of the same values, for the few types the
 * tables use, without a Python object per value.
 *
 * Kinds (one character per column): I UInt32, Q UInt64, q Int64, b Int8, d Float64, s String,
 * L LowCardinality(String), M Map(LowCardinality(String), String), m Map(String, String),
 * t Tuple(Int64, Float64), k Map(Int32, UInt64).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "buffer.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "Native's numbers are little-endian, and this encoder copies them as the host holds them"
#endif

static int put_varint(Buf *b, uint64_t v) {
    if (grow(b, 10)) return -1;
    while (v >= 0x80) {
        b->data[b->len++] = (char)(v | 0x80);
        v >>= 7;
    }
    b->data[b->len++] = (char)v;
    return 0;
}

static int put_u64(Buf *b, uint64_t v) { return put(b, &v, 8); }

static int put_string(Buf *b, PyObject *v) {
    const char *s;
    Py_ssize_t n;
    if (PyUnicode_Check(v)) {
        s = PyUnicode_AsUTF8AndSize(v, &n);
        if (!s) return -1;
    } else if (PyBytes_Check(v)) {
        s = PyBytes_AS_STRING(v);
        n = PyBytes_GET_SIZE(v);
    } else {
        PyErr_Format(PyExc_TypeError, "expected str or bytes for a String, got %.100s", Py_TYPE(v)->tp_name);
        return -1;
    }
    if (put_varint(b, (uint64_t)n)) return -1;
    return put(b, s, (size_t)n);
}

static int put_int(Buf *b, PyObject *v, char kind) {
    if (!PyLong_Check(v)) {
        PyErr_Format(PyExc_TypeError, "expected int, got %.100s", Py_TYPE(v)->tp_name);
        return -1;
    }
    if (kind == 'Q') {
        unsigned long long x = PyLong_AsUnsignedLongLong(v);
        if (x == (unsigned long long)-1 && PyErr_Occurred()) return -1;
        return put_u64(b, x);
    }
    long long x = PyLong_AsLongLong(v);
    if (x == -1 && PyErr_Occurred()) return -1;
    switch (kind) {
    case 'q': return put(b, &x, 8);
    case 'I': {
        if (x < 0 || x > UINT32_MAX) goto range;
        uint32_t y = (uint32_t)x;
        return put(b, &y, 4);
    }
    case 'i': {
        if (x < INT32_MIN || x > INT32_MAX) goto range;
        int32_t y = (int32_t)x;
        return put(b, &y, 4);
    }
    case 'b': {
        if (x < INT8_MIN || x > INT8_MAX) goto range;
        int8_t y = (int8_t)x;
        return put(b, &y, 1);
    }
    }
range:
    PyErr_Format(PyExc_OverflowError, "%lld is out of range for its column", x);
    return -1;
}

static int put_float(Buf *b, PyObject *v) {
    double x = PyFloat_AsDouble(v);
    if (x == -1.0 && PyErr_Occurred()) return -1;
    return put(b, &x, 8);
}

/* LowCardinality(String) data (its prefix is written by the caller): a dictionary of the values
 * in first-seen order, then each row's index into it, in the fewest bytes that hold one. */
static int put_low_cardinality(Buf *b, PyObject **values, Py_ssize_t n) {
    if (n == 0) return 0;
    PyObject *seen = PyDict_New();
    if (!seen) return -1;
    uint32_t *ix = PyMem_Malloc(sizeof(uint32_t) * (size_t)n);
    PyObject *keys = PyList_New(0);
    int rc = -1;
    if (!ix || !keys) goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *found = PyDict_GetItemWithError(seen, values[i]);
        if (found) {
            ix[i] = (uint32_t)PyLong_AsUnsignedLong(found);
            continue;
        }
        if (PyErr_Occurred()) goto done;
        Py_ssize_t k = PyList_GET_SIZE(keys);
        PyObject *number = PyLong_FromSsize_t(k);
        if (!number) goto done;
        int failed = PyDict_SetItem(seen, values[i], number) || PyList_Append(keys, values[i]);
        Py_DECREF(number);
        if (failed) goto done;
        ix[i] = (uint32_t)k;
    }
    Py_ssize_t nkeys = PyList_GET_SIZE(keys);
    int width_log = 0; /* floor(log2(nkeys)) / 8: 0 for UInt8 ... 3 for UInt64 */
    for (Py_ssize_t v = nkeys; v > 1; v >>= 1) width_log++;
    width_log >>= 3;
    if (put_u64(b, (1u << 9) | (1u << 10) | (uint64_t)width_log) || put_u64(b, (uint64_t)nkeys)) goto done;
    for (Py_ssize_t k = 0; k < nkeys; k++)
        if (put_string(b, PyList_GET_ITEM(keys, k))) goto done;
    if (put_u64(b, (uint64_t)n)) goto done;
    size_t width = (size_t)1 << width_log;
    if (grow(b, width * (size_t)n)) goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        uint64_t v = ix[i];
        memcpy(b->data + b->len, &v, width); /* little-endian: the low bytes */
        b->len += width;
    }
    rc = 0;
done:
    PyMem_Free(ix);
    Py_XDECREF(keys);
    Py_DECREF(seen);
    return rc;
}

/* A Map column: offsets, then every key, then every value, in each dict's order. */
static int put_map(Buf *b, PyObject **values, Py_ssize_t n, char kind) {
    Py_ssize_t total = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!PyDict_Check(values[i])) {
            PyErr_Format(PyExc_TypeError, "expected dict for a Map, got %.100s", Py_TYPE(values[i])->tp_name);
            return -1;
        }
        total += PyDict_GET_SIZE(values[i]);
    }
    if (kind == 'M' && put_u64(b, 1)) return -1; /* the keys' LowCardinality version */
    uint64_t offset = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        offset += (uint64_t)PyDict_GET_SIZE(values[i]);
        if (put_u64(b, offset)) return -1;
    }
    PyObject **keys = PyMem_Malloc(sizeof(PyObject *) * (size_t)(total ? total : 1));
    PyObject **items = PyMem_Malloc(sizeof(PyObject *) * (size_t)(total ? total : 1));
    int rc = -1;
    if (!keys || !items) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t j = 0;
    for (Py_ssize_t i = 0; i < n; i++) { /* borrowed: the dicts are not changed meanwhile */
        Py_ssize_t pos = 0;
        PyObject *k, *v;
        while (PyDict_Next(values[i], &pos, &k, &v)) {
            keys[j] = k;
            items[j++] = v;
        }
    }
    if (kind == 'M') {
        if (put_low_cardinality(b, keys, total)) goto done;
    } else {
        for (Py_ssize_t i = 0; i < total; i++)
            if (kind == 'k' ? put_int(b, keys[i], 'i') : put_string(b, keys[i])) goto done;
    }
    for (Py_ssize_t i = 0; i < total; i++)
        if (kind == 'k' ? put_int(b, items[i], 'Q') : put_string(b, items[i])) goto done;
    rc = 0;
done:
    PyMem_Free(keys);
    PyMem_Free(items);
    return rc;
}

static int put_column(Buf *b, PyObject *column, char kind) {
    if (!PyList_Check(column)) {
        PyErr_SetString(PyExc_TypeError, "a column must be a list");
        return -1;
    }
    PyObject **values = ((PyListObject *)column)->ob_item;
    Py_ssize_t n = PyList_GET_SIZE(column);
    switch (kind) {
    case 'I': case 'Q': case 'q': case 'b':
        for (Py_ssize_t i = 0; i < n; i++)
            if (put_int(b, values[i], kind)) return -1;
        return 0;
    case 'd':
        for (Py_ssize_t i = 0; i < n; i++)
            if (put_float(b, values[i])) return -1;
        return 0;
    case 's':
        for (Py_ssize_t i = 0; i < n; i++)
            if (put_string(b, values[i])) return -1;
        return 0;
    case 'L':
        return put_u64(b, 1) || put_low_cardinality(b, values, n); /* its version, then the data */
    case 'M': case 'm': case 'k':
        return put_map(b, values, n, kind);
    case 't':
        for (Py_ssize_t i = 0; i < n; i++) {
            if (!PyTuple_Check(values[i]) || PyTuple_GET_SIZE(values[i]) != 2) {
                PyErr_SetString(PyExc_TypeError, "expected a tuple of 2 for Tuple(Int64, Float64)");
                return -1;
            }
            if (put_int(b, PyTuple_GET_ITEM(values[i], 0), 'q')) return -1;
        }
        for (Py_ssize_t i = 0; i < n; i++)
            if (put_float(b, PyTuple_GET_ITEM(values[i], 1))) return -1;
        return 0;
    }
    PyErr_Format(PyExc_ValueError, "unknown column kind %c", kind);
    return -1;
}

PyDoc_STRVAR(block_doc,
    "block(columns, names, types, kinds, /) -> bytes\n\n"
    "One Native block: ``columns`` (lists of equal length) named ``names``, of the ClickHouse\n"
    "``types`` (as the block declares them) and encoded by ``kinds`` (a str, one character per\n"
    "column: see _native.c).");

static PyObject *block(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 4 || !PyList_Check(args[0]) || !PyList_Check(args[1]) || !PyList_Check(args[2]) ||
        !PyUnicode_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError, "block() takes (list, list, list, str)");
        return NULL;
    }
    PyObject *columns = args[0], *names = args[1], *types = args[2];
    Py_ssize_t width = PyList_GET_SIZE(columns);
    Py_ssize_t nkinds;
    const char *kinds = PyUnicode_AsUTF8AndSize(args[3], &nkinds);
    if (!kinds) return NULL;
    if (PyList_GET_SIZE(names) != width || PyList_GET_SIZE(types) != width || nkinds != width) {
        PyErr_SetString(PyExc_ValueError, "columns, names, types and kinds differ in length");
        return NULL;
    }
    Py_ssize_t rows = width ? Py_SIZE(PyList_GET_ITEM(columns, 0)) : 0;
    Buf b = {NULL, 0, 0};
    if (put_varint(&b, (uint64_t)width) || put_varint(&b, (uint64_t)rows)) goto fail;
    for (Py_ssize_t c = 0; c < width; c++) {
        PyObject *column = PyList_GET_ITEM(columns, c);
        if (!PyList_Check(column) || PyList_GET_SIZE(column) != rows) {
            PyErr_Format(PyExc_ValueError, "column %zd is not a list of %zd values", c, rows);
            goto fail;
        }
        if (put_string(&b, PyList_GET_ITEM(names, c)) || put_string(&b, PyList_GET_ITEM(types, c))) goto fail;
        if (put_column(&b, column, kinds[c])) { /* the same error, naming the column */
            PyObject *type, *value, *tb;
            PyErr_Fetch(&type, &value, &tb);
            PyErr_NormalizeException(&type, &value, &tb);
            PyErr_Format(type, "column %S: %S", PyList_GET_ITEM(names, c), value ? value : Py_None);
            Py_XDECREF(type);
            Py_XDECREF(value);
            Py_XDECREF(tb);
            goto fail;
        }
    }
    PyObject *out = PyBytes_FromStringAndSize(b.data ? b.data : "", (Py_ssize_t)b.len);
    PyMem_Free(b.data);
    return out;
fail:
    PyMem_Free(b.data);
    return NULL;
}

static PyMethodDef methods[] = {
    {"block", (PyCFunction)(void (*)(void))block, METH_FASTCALL, block_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_native", NULL, -1, methods};

PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&module); }
