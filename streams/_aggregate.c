/* The worker's per-point and per-row loops in C: a record's metric points into the aggregates of
 * its tumbling windows (streams/windows.py, TumblingWindows.add), the series id of each point
 * (series_ids) and the rows of a closing window (TumblingWindows.close).
 * Both keep the Python semantics of the code they replace: the same value lists, the same
 * comparisons, the same memo of series ids; tests/unit/streams/test_aggregate.py compares them
 * with plain Python versions of the same loops.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#define NS 1000000000LL
/* Positions in a point: (name, kind, unit, tags, ts, value, last). */
enum { P_NAME, P_KIND, P_UNIT, P_TAGS, P_TS, P_VALUE, P_LAST, P_WIDTH };
/* Positions in an aggregate: [access_key, name, kind, unit, tags, count, sum, min, max, last_ts, last, sketch]. */
enum { A_COUNT = 5, A_SUM, A_MIN, A_MAX, A_LAST_TS, A_LAST, A_SKETCH, A_WIDTH };

static PyObject *ONE;

/* Lists and tuples made here (and the decoder's rows and points) hold strings, numbers, tags
 * and sketches, never themselves or a container that holds them: they cannot be part of a
 * reference cycle, and refcounting alone frees them. Untracked, the cyclic collector does not
 * walk them: a worker's young collections walked each batch's hundreds of thousands of rows,
 * points and aggregates again and again. */
static PyObject *untracked(PyObject *container) {
    if (container) PyObject_GC_UnTrack(container);
    return container;
}

static PyObject *point_at(PyObject *points, Py_ssize_t i) {
    PyObject *p = PyList_GET_ITEM(points, i);
    if (!PyTuple_Check(p) || PyTuple_GET_SIZE(p) != P_WIDTH) {
        PyErr_Format(PyExc_TypeError, "point %zd is not a tuple of %d values", i, P_WIDTH);
        return NULL;
    }
    return p;
}

/* item = item + other (floats added in C, anything else as Python adds it). */
static int add_into(PyObject *list, Py_ssize_t at, PyObject *other) {
    PyObject *old = PyList_GET_ITEM(list, at), *sum;
    if (PyFloat_CheckExact(old) && PyFloat_CheckExact(other))
        sum = PyFloat_FromDouble(PyFloat_AS_DOUBLE(old) + PyFloat_AS_DOUBLE(other));
    else
        sum = PyNumber_Add(old, other);
    if (!sum) return -1;
    PyList_SetItem(list, at, sum); /* steals sum, drops old */
    return 0;
}

static void set_item(PyObject *list, Py_ssize_t at, PyObject *value) {
    Py_INCREF(value);
    PyList_SetItem(list, at, value);
}

/* a < b, with floats compared in C; -1 on error. */
static int less(PyObject *a, PyObject *b) {
    if (PyFloat_CheckExact(a) && PyFloat_CheckExact(b)) return PyFloat_AS_DOUBLE(a) < PyFloat_AS_DOUBLE(b);
    return PyObject_RichCompareBool(a, b, Py_LT);
}

/* Python's floor division of int64 (size_ns > 0). */
static int64_t floor_div(int64_t a, int64_t b) {
    int64_t q = a / b;
    return (a % b != 0 && a < 0) ? q - 1 : q;
}

PyDoc_STRVAR(aggregate_doc,
    "aggregate(points, sids, access_key, size_s, newest, resolve, timer_kind, timer_add, /) -> int\n\n"
    "Add each point (list of MetricPoint tuples) to the aggregate of its series (``sids``, one per\n"
    "point) in the dict ``resolve(start)`` returns for its window start (seconds; None: skip the\n"
    "point). ``resolve`` is called whenever the start differs from the previous point's. Timer\n"
    "points also go to ``timer_add(sketch, value)``. Returns the newest of ``newest`` and the\n"
    "points' timestamps.");

static PyObject *aggregate(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 8) {
        PyErr_SetString(PyExc_TypeError, "aggregate() takes 8 arguments");
        return NULL;
    }
    PyObject *points = args[0], *sids = args[1], *access_key = args[2], *resolve = args[5], *timer_kind = args[6],
             *timer_add = args[7];
    if (!PyList_Check(points) || !PyList_Check(sids) || PyList_GET_SIZE(points) != PyList_GET_SIZE(sids)) {
        PyErr_SetString(PyExc_TypeError, "points and sids must be lists of the same length");
        return NULL;
    }
    long long size_s = PyLong_AsLongLong(args[3]);
    if (size_s == -1 && PyErr_Occurred()) return NULL;
    if (size_s < 1 || size_s > INT64_MAX / NS) {
        PyErr_Format(PyExc_ValueError, "size_s must be from 1 to %lld, got %lld", (long long)(INT64_MAX / NS), size_s);
        return NULL;
    }
    int64_t size_ns = (int64_t)size_s * NS;
    int64_t newest = PyLong_AsLongLong(args[4]);
    if (newest == -1 && PyErr_Occurred()) return NULL;

    int have_start = 0;
    int64_t last_start = 0;
    PyObject *into = NULL; /* borrowed from `held` */
    PyObject *held = NULL;  /* what resolve returned for last_start */
    Py_ssize_t n = PyList_GET_SIZE(points);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *p = point_at(points, i);
        if (!p) goto fail;
        PyObject *ts_obj = PyTuple_GET_ITEM(p, P_TS), *v = PyTuple_GET_ITEM(p, P_VALUE);
        int64_t ts = PyLong_AsLongLong(ts_obj);
        if (ts == -1 && PyErr_Occurred()) goto fail;
        if (ts > newest) newest = ts;
        int64_t start = floor_div(ts, size_ns) * size_s;
        if (!have_start || start != last_start) {
            have_start = 1;
            last_start = start;
            Py_XDECREF(held);
            held = PyObject_CallFunction(resolve, "L", (long long)start);
            if (!held) goto fail;
            if (held == Py_None) {
                into = NULL;
            } else if (PyDict_Check(held)) {
                into = held;
            } else {
                PyErr_SetString(PyExc_TypeError, "resolve() must return a dict or None");
                goto fail;
            }
        }
        if (!into) continue;
        PyObject *sid = PyList_GET_ITEM(sids, i);
        PyObject *agg = PyDict_GetItemWithError(into, sid);
        if (!agg) {
            if (PyErr_Occurred()) goto fail;
            PyObject *sketch = PyDict_New();
            if (!sketch) goto fail;
            agg = untracked(PyList_New(A_WIDTH));
            if (!agg) {
                Py_DECREF(sketch);
                goto fail;
            }
            PyObject *init[A_WIDTH] = {
                access_key, PyTuple_GET_ITEM(p, P_NAME), PyTuple_GET_ITEM(p, P_KIND), PyTuple_GET_ITEM(p, P_UNIT),
                PyTuple_GET_ITEM(p, P_TAGS), ONE, v, v, v, ts_obj, PyTuple_GET_ITEM(p, P_LAST), sketch,
            };
            for (int k = 0; k < A_WIDTH; k++) {
                if (k != A_SKETCH) Py_INCREF(init[k]);
                PyList_SET_ITEM(agg, k, init[k]);
            }
            int failed = PyDict_SetItem(into, sid, agg);
            Py_DECREF(agg); /* the dict holds it */
            if (failed) goto fail;
        } else {
            if (!PyList_Check(agg) || PyList_GET_SIZE(agg) != A_WIDTH) {
                PyErr_SetString(PyExc_TypeError, "an aggregate is not a list of 12 values");
                goto fail;
            }
            if (add_into(agg, A_COUNT, ONE) || add_into(agg, A_SUM, v)) goto fail;
            int lt = less(v, PyList_GET_ITEM(agg, A_MIN));
            if (lt < 0) goto fail;
            if (lt) {
                set_item(agg, A_MIN, v);
            } else {
                int gt = less(PyList_GET_ITEM(agg, A_MAX), v);
                if (gt < 0) goto fail;
                if (gt) set_item(agg, A_MAX, v);
            }
            PyObject *last_ts = PyList_GET_ITEM(agg, A_LAST_TS);
            int64_t old_ts = PyLong_AsLongLong(last_ts);
            if (old_ts == -1 && PyErr_Occurred()) goto fail;
            if (ts >= old_ts) {
                set_item(agg, A_LAST_TS, ts_obj);
                set_item(agg, A_LAST, PyTuple_GET_ITEM(p, P_LAST));
            }
        }
        PyObject *kind = PyTuple_GET_ITEM(p, P_KIND);
        int is_timer = kind == timer_kind;
        if (!is_timer && PyUnicode_Check(kind)) {
            is_timer = PyUnicode_Compare(kind, timer_kind) == 0;
            if (PyErr_Occurred()) goto fail;
        }
        if (is_timer) {
            PyObject *r = PyObject_CallFunctionObjArgs(timer_add, PyList_GET_ITEM(agg, A_SKETCH), v, NULL);
            if (!r) goto fail;
            Py_DECREF(r);
        }
    }
    Py_XDECREF(held);
    return PyLong_FromLongLong(newest);
fail:
    Py_XDECREF(held);
    return NULL;
}

PyDoc_STRVAR(series_ids_doc,
    "series_ids(access_key, points, memo, memo_max, compute, /) -> list[int]\n\n"
    "The series id of each point: ``compute(access_key, name, tags)``, remembered in ``memo``\n"
    "(cleared when it holds ``memo_max`` series). The memo is keyed by an in-process hash of\n"
    "the access key, name and tags in their order, and a hit is checked against the strings\n"
    "themselves: looking a point up makes no Python object unless it is a miss.");

/* The memo key of (access_key, name, tags in their order): Python's own string hashes, combined
 * as CPython combines a tuple's (xxHash's round). -1 on error. */
static Py_hash_t key_hash(PyObject *access_key, PyObject *name, PyObject *tags) {
    const Py_uhash_t P1 = 11400714785074694791ULL, P2 = 14029467366897019727ULL, P5 = 2870177450012600261ULL;
    Py_uhash_t acc = P5;
#define ROUND(obj)                                            \
    do {                                                      \
        Py_hash_t h_ = PyObject_Hash(obj);                    \
        if (h_ == -1) return -1;                              \
        acc += (Py_uhash_t)h_ * P2;                           \
        acc = (acc << 31) | (acc >> 33);                      \
        acc *= P1;                                            \
    } while (0)
    ROUND(access_key);
    ROUND(name);
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    while (PyDict_Next(tags, &pos, &k, &v)) {
        ROUND(k);
        ROUND(v);
    }
#undef ROUND
    acc += (Py_uhash_t)PyDict_GET_SIZE(tags) ^ (P5 ^ 3527539UL);
    return acc == (Py_uhash_t)-1 ? 1546275796 : (Py_hash_t)acc;
}

static int same(PyObject *a, PyObject *b) {
    return a == b || PyObject_RichCompareBool(a, b, Py_EQ);
}

/* Whether a memo entry (access_key, name, (k0, v0, k1, v1, ...), sid) names this series; -1 on error. */
static int entry_matches(PyObject *entry, PyObject *access_key, PyObject *name, PyObject *tags) {
    if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) != 4) return 0;
    PyObject *flat = PyTuple_GET_ITEM(entry, 2);
    if (!PyTuple_Check(flat) || PyTuple_GET_SIZE(flat) != 2 * PyDict_GET_SIZE(tags)) return 0;
    int r;
    if ((r = same(PyTuple_GET_ITEM(entry, 0), access_key)) != 1) return r;
    if ((r = same(PyTuple_GET_ITEM(entry, 1), name)) != 1) return r;
    Py_ssize_t pos = 0, i = 0;
    PyObject *k, *v;
    while (PyDict_Next(tags, &pos, &k, &v)) {
        if ((r = same(PyTuple_GET_ITEM(flat, i++), k)) != 1) return r;
        if ((r = same(PyTuple_GET_ITEM(flat, i++), v)) != 1) return r;
    }
    return 1;
}

/* Compute a point's series id and remember it under `hash`; a new reference. */
static PyObject *remember(PyObject *memo, Py_ssize_t memo_max, PyObject *hash, PyObject *compute,
                          PyObject *access_key, PyObject *name, PyObject *tags) {
    PyObject *sid = PyObject_CallFunctionObjArgs(compute, access_key, name, tags, NULL);
    if (!sid) return NULL;
    PyObject *flat = PyTuple_New(2 * PyDict_GET_SIZE(tags));
    if (!flat) goto fail;
    Py_ssize_t pos = 0, i = 0;
    PyObject *k, *v;
    while (PyDict_Next(tags, &pos, &k, &v)) {
        Py_INCREF(k);
        Py_INCREF(v);
        PyTuple_SET_ITEM(flat, i++, k);
        PyTuple_SET_ITEM(flat, i++, v);
    }
    PyObject *entry = PyTuple_Pack(4, access_key, name, flat, sid);
    Py_DECREF(flat);
    if (!entry) goto fail;
    if (PyDict_GET_SIZE(memo) >= memo_max) PyDict_Clear(memo);
    int failed = PyDict_SetItem(memo, hash, entry);
    Py_DECREF(entry);
    if (failed) goto fail;
    return sid;
fail:
    Py_DECREF(sid);
    return NULL;
}

static PyObject *series_ids(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "series_ids() takes 5 arguments");
        return NULL;
    }
    PyObject *access_key = args[0], *points = args[1], *memo = args[2], *compute = args[4];
    if (!PyList_Check(points) || !PyDict_Check(memo)) {
        PyErr_SetString(PyExc_TypeError, "points must be a list and memo a dict");
        return NULL;
    }
    Py_ssize_t memo_max = PyLong_AsSsize_t(args[3]);
    if (memo_max == -1 && PyErr_Occurred()) return NULL;
    Py_ssize_t n = PyList_GET_SIZE(points);
    PyObject *out = PyList_New(n);
    if (!out) return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *p = point_at(points, i);
        if (!p) goto fail;
        PyObject *name = PyTuple_GET_ITEM(p, P_NAME), *tags = PyTuple_GET_ITEM(p, P_TAGS);
        if (!PyDict_Check(tags)) {
            PyErr_Format(PyExc_TypeError, "point %zd: tags are not a dict", i);
            goto fail;
        }
        Py_hash_t h = key_hash(access_key, name, tags);
        if (h == -1) goto fail;
        PyObject *hash = PyLong_FromSsize_t(h);
        if (!hash) goto fail;
        PyObject *entry = PyDict_GetItemWithError(memo, hash); /* borrowed */
        PyObject *sid = NULL;
        int match = entry ? entry_matches(entry, access_key, name, tags) : 0;
        if (match == 1) {
            sid = PyTuple_GET_ITEM(entry, 3);
            Py_INCREF(sid);
        } else if (match == 0 && !PyErr_Occurred()) {
            sid = remember(memo, memo_max, hash, compute, access_key, name, tags);
        }
        Py_DECREF(hash);
        if (!sid) goto fail;
        PyList_SET_ITEM(out, i, sid);
    }
    return out;
fail:
    Py_DECREF(out);
    return NULL;
}

PyDoc_STRVAR(window_rows_doc,
    "window_rows(values, start, /) -> list[list]\n\n"
    "A window's rows in METRIC_COLUMNS order, by series id: for each ``sid`` of ``values``\n"
    "(sid -> aggregate), ``[access_key, name, sid, start, kind, unit, tags, count, sum, min, max,\n"
    "(last_ts, last), sketch]``.");

static PyObject *window_rows(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 2 || !PyDict_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "window_rows() takes a dict and a start");
        return NULL;
    }
    PyObject *values = args[0], *start = args[1];
    PyObject *sids = PyDict_Keys(values);
    if (!sids) return NULL;
    if (PyList_Sort(sids)) {
        Py_DECREF(sids);
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(sids);
    PyObject *rows = PyList_New(n);
    if (!rows) {
        Py_DECREF(sids);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *sid = PyList_GET_ITEM(sids, i);
        PyObject *v = PyDict_GetItemWithError(values, sid);
        if (!v || !PyList_Check(v) || PyList_GET_SIZE(v) != A_WIDTH) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "an aggregate is not a list of 12 values");
            goto fail;
        }
        PyObject **a = ((PyListObject *)v)->ob_item;
        PyObject *last = untracked(PyTuple_Pack(2, a[A_LAST_TS], a[A_LAST]));
        if (!last) goto fail;
        PyObject *row = untracked(PyList_New(13));
        if (!row) {
            Py_DECREF(last);
            goto fail;
        }
        PyObject *items[13] = {a[0], a[1], sid, start, a[2], a[3], a[4], a[A_COUNT], a[A_SUM], a[A_MIN], a[A_MAX], last, a[A_SKETCH]};
        for (int k = 0; k < 13; k++) {
            if (k != 11) Py_INCREF(items[k]);
            PyList_SET_ITEM(row, k, items[k]);
        }
        PyList_SET_ITEM(rows, i, row);
    }
    Py_DECREF(sids);
    return rows;
fail:
    Py_DECREF(sids);
    Py_DECREF(rows);
    return NULL;
}

static PyMethodDef methods[] = {
    {"aggregate", (PyCFunction)(void (*)(void))aggregate, METH_FASTCALL, aggregate_doc},
    {"series_ids", (PyCFunction)(void (*)(void))series_ids, METH_FASTCALL, series_ids_doc},
    {"window_rows", (PyCFunction)(void (*)(void))window_rows, METH_FASTCALL, window_rows_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_aggregate", "The windows' per-point and per-row loops in C.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__aggregate(void) {
    if (!(ONE = PyLong_FromLong(1))) return NULL;
    return PyModule_Create(&module);
}
