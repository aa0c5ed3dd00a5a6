/* time_bounds.Window in C: the times an envelope may hold, in ns since the epoch, inclusive.
 * Shared by the gateway's fast path (ingress/_scan.c) and the worker's (streams/_decode.c). */
#ifndef SLUICE_TIME_WINDOW_H
#define SLUICE_TIME_WINDOW_H

#include <Python.h>
#include <stdint.h>

typedef struct {
    int64_t raw_from;     /* a log's, event's or span's stored time */
    int64_t metric_from;  /* a metric point's */
    int64_t until;        /* every time */
    int64_t max_duration; /* a timer's stop - start, a span's end - start */
} window_t;

static const window_t UNBOUNDED_WINDOW = {INT64_MIN, INT64_MIN, INT64_MAX, INT64_MAX};

/* A time_bounds.Window argument into ``w``; 0 with a TypeError when it is not 4 ints. */
static int window_arg(PyObject *arg, window_t *w, const char *function) {
    if (!PyTuple_Check(arg) || PyTuple_GET_SIZE(arg) != 4) {
        PyErr_Format(PyExc_TypeError, "%s(): window must be a tuple of 4 ints (raw_from, metric_from, until, "
                     "max_duration)", function);
        return 0;
    }
    int64_t *fields[4] = {&w->raw_from, &w->metric_from, &w->until, &w->max_duration};
    for (int i = 0; i < 4; i++) {
        long long v = PyLong_AsLongLong(PyTuple_GET_ITEM(arg, i));
        if (v == -1 && PyErr_Occurred()) return 0;
        *fields[i] = v;
    }
    return 1;
}

static inline int within(int64_t t, int64_t from, const window_t *w) { return t >= from && t <= w->until; }

#endif
