/* Rows to columns for the ClickHouse sink (streams/sinks/clickhouse.py, columns_of): one list per
 * column holding the rows' own values, with no Python object made per row.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

PyDoc_STRVAR(columns_doc,
    "columns(rows, width, /) -> list[list] | None\n\n"
    "``rows`` (a list of lists or tuples of ``width`` values each) as ``width`` column lists;\n"
    "None, and nothing made, when ``rows`` is not a list or a row is of another type or width.");

static PyObject *columns(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "columns() takes 2 arguments");
        return NULL;
    }
    PyObject *rows = args[0];
    if (!PyList_Check(rows)) Py_RETURN_NONE;
    Py_ssize_t width = PyLong_AsSsize_t(args[1]);
    if (width == -1 && PyErr_Occurred()) return NULL;
    if (width < 0) {
        PyErr_SetString(PyExc_ValueError, "width must be >= 0");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(rows);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *row = PyList_GET_ITEM(rows, i);
        if (!(PyList_Check(row) || PyTuple_Check(row)) || Py_SIZE(row) != width) Py_RETURN_NONE;
    }
    PyObject *out = PyList_New(width);
    if (!out) return NULL;
    for (Py_ssize_t c = 0; c < width; c++) {
        PyObject *column = PyList_New(n);
        if (!column) {
            Py_DECREF(out);
            return NULL;
        }
        /* A column holds the rows' values, never a container of itself: the cyclic collector
         * need not walk it (see untracked() in _aggregate.c). */
        PyObject_GC_UnTrack(column);
        PyList_SET_ITEM(out, c, column);
    }
    /* Row by row: each row's values are read while it is in cache. */
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *row = PyList_GET_ITEM(rows, i);
        PyObject **values = PyList_Check(row) ? ((PyListObject *)row)->ob_item : ((PyTupleObject *)row)->ob_item;
        for (Py_ssize_t c = 0; c < width; c++) {
            Py_INCREF(values[c]);
            PyList_SET_ITEM(PyList_GET_ITEM(out, c), i, values[c]);
        }
    }
    return out;
}

static PyMethodDef methods[] = {
    {"columns", (PyCFunction)(void (*)(void))columns, METH_FASTCALL, columns_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_columns", "Rows to columns for the ClickHouse sink.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__columns(void) { return PyModule_Create(&module); }
