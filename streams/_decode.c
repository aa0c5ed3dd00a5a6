/* The worker's fast decoder: an EnvelopeBatch record straight from its wire bytes to the rows and
 * metric points of streams/decode.py, with no protobuf objects in between.
 *
 * decode() handles what records nearly always hold (logs, events, counters, gauges and timers,
 * each field once, valid UTF-8, every time within the record's window) and returns None for
 * anything else: spans, an unknown or repeated field, a gauge naming a metric twice, bad UTF-8,
 * an envelope with no message, bytes that are not a batch, a time out of bounds. decode.py then
 * decodes the record with protobuf, which alone words errors and drops what is out of bounds.
 * tests/unit/streams/test_fast_decode.py checks that both give the same rows and points.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "protowire.h"
#include "time_window.h"

#define MAX_TAGS 64     /* more tags than this in one envelope: the slow path */
#define MAX_METRICS 64  /* gauge readings in one envelope */

typedef struct {
    ptr data;
    uint64_t len;
} bytes_t; /* a string's bytes in the record */

static PyObject *COUNTER, *GAUGE, *TIMER, *EMPTY, *MS, *OUT, *ERR;

static PyObject *text(bytes_t s) {
    return PyUnicode_DecodeUTF8((const char *)s.data, (Py_ssize_t)s.len, NULL);
}

#define NAME_SLOTS 65536 /* a power of two */
#define NAME_MAX_LEN 64
static PyObject *names[NAME_SLOTS];

/* text() for the strings that repeat from envelope to envelope (tag keys and values, metric
 * names and units, sources, instances): a short ASCII string is shared with earlier records
 * through a direct-mapped cache, whose slot keeps the last string hashed to it (at most
 * NAME_SLOTS strings of NAME_MAX_LEN bytes). A shared string is allocated, freed and hashed
 * once (series ids hash names and tags), not once per envelope, and compares by identity. */
static PyObject *name_text(bytes_t s) {
    if (s.len > NAME_MAX_LEN) return text(s);
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    uint8_t high = 0;
    for (uint64_t i = 0; i < s.len; i++) {
        h = (h ^ s.data[i]) * 1099511628211ULL;
        high |= s.data[i];
    }
    if (high & 0x80) return text(s);
    PyObject **slot = &names[(h ^ (h >> 32)) & (NAME_SLOTS - 1)];
    PyObject *found = *slot;
    if (found && PyUnicode_GET_LENGTH(found) == (Py_ssize_t)s.len && !memcmp(PyUnicode_1BYTE_DATA(found), s.data, s.len))
        return Py_NewRef(found);
    PyObject *str = PyUnicode_New((Py_ssize_t)s.len, 127);
    if (!str) return NULL;
    memcpy(PyUnicode_1BYTE_DATA(str), s.data, s.len);
    Py_XSETREF(*slot, Py_NewRef(str));
    return str;
}

/* The fields of one envelope (or of one of its messages) we read, each seen at most once. */
typedef struct {
    uint32_t seen;
    int64_t timestamp;
    bytes_t source, instance;
    int kind; /* field number of the oneof member, 0 if none */
    bytes_t message;
    int ntags;
    bytes_t tag_keys[MAX_TAGS], tag_values[MAX_TAGS];
} envelope_t;

#define ONCE(seen, n)                     \
    do {                                  \
        if ((seen) & (1u << (n))) return 0; \
        (seen) |= 1u << (n);              \
    } while (0)

static int read_tag(ptr p, ptr end, bytes_t *key, bytes_t *value) {
    field_t f;
    uint32_t seen = 0;
    key->len = value->len = 0;
    key->data = value->data = p;
    while (p < end) {
        if (!(p = next_field(p, end, &f)) || f.wire != LEN || (f.number != 1 && f.number != 2)) return 0;
        ONCE(seen, f.number);
        bytes_t s = {f.data, f.len};
        *(f.number == 1 ? key : value) = s;
    }
    return 1;
}

static int read_envelope(ptr p, ptr end, envelope_t *e) {
    field_t f;
    e->seen = 0;
    e->timestamp = 0;
    e->source.len = e->instance.len = 0;
    e->source.data = e->instance.data = p;
    e->kind = 0;
    e->ntags = 0;
    while (p < end) {
        if (!(p = next_field(p, end, &f))) return 0;
        if (f.number >= 10 && f.number <= 14 && f.wire == LEN) { /* log .. event; a span: the slow path */
            if (e->kind) return 0;
            e->kind = (int)f.number;
            e->message.data = f.data;
            e->message.len = f.len;
        } else if (f.number == 1 && f.wire == VARINT) {
            ONCE(e->seen, 1);
            e->timestamp = (int64_t)f.value;
        } else if (f.number == 2 && f.wire == LEN) {
            ONCE(e->seen, 2);
            e->source.data = f.data;
            e->source.len = f.len;
        } else if (f.number == 3 && f.wire == LEN) {
            ONCE(e->seen, 3);
            e->instance.data = f.data;
            e->instance.len = f.len;
        } else if (f.number == 4 && f.wire == LEN) {
            if (e->ntags == MAX_TAGS) return 0;
            if (!read_tag(f.data, f.data + f.len, &e->tag_keys[e->ntags], &e->tag_values[e->ntags])) return 0;
            e->ntags++;
        } else {
            return 0;
        }
    }
    return e->kind != 0;
}

static PyObject *new_tags(const envelope_t *e) {
    PyObject *tags = PyDict_New();
    if (!tags) return NULL;
    for (int i = 0; i < e->ntags; i++) {
        PyObject *k = name_text(e->tag_keys[i]);
        PyObject *v = k ? name_text(e->tag_values[i]) : NULL;
        int failed = !v || PyDict_SetItem(tags, k, v) < 0; /* a repeated key: the last wins, as in protobuf */
        Py_XDECREF(k);
        Py_XDECREF(v);
        if (failed) {
            Py_DECREF(tags);
            return NULL;
        }
    }
    return tags;
}

#define TAG_SLOTS 16384  /* a power of two */
#define TAG_KEY_MAX 512  /* bytes of an envelope's tags, framed, beyond which they are not shared */

typedef struct {
    uint64_t hash;
    size_t len;
    char *key; /* the tags' bytes as framed by tags_of */
    PyObject *tags;
} tag_slot_t;

static tag_slot_t tag_slots[TAG_SLOTS];

/* The tags dict of an envelope. Envelopes whose tags have the same bytes in the same order
 * (those of one series, as one agent writes them) share one dict through a direct-mapped cache:
 * a dict and its entries made for every envelope were about half of decoding. Rows and
 * points keep these dicts, so nothing may change them. */
static PyObject *tags_of(const envelope_t *e) {
    char key[TAG_KEY_MAX];
    size_t len = 0;
    for (int i = 0; i < e->ntags; i++) {
        bytes_t parts[2] = {e->tag_keys[i], e->tag_values[i]};
        for (int j = 0; j < 2; j++) {
            if (len + 4 + parts[j].len > TAG_KEY_MAX) return new_tags(e);
            uint32_t n = (uint32_t)parts[j].len;
            memcpy(key + len, &n, 4);
            memcpy(key + len + 4, parts[j].data, parts[j].len);
            len += 4 + parts[j].len;
        }
    }
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < len; i++) h = (h ^ (uint8_t)key[i]) * 1099511628211ULL;
    tag_slot_t *slot = &tag_slots[(h ^ (h >> 32)) & (TAG_SLOTS - 1)];
    if (slot->tags && slot->hash == h && slot->len == len && !memcmp(slot->key, key, len)) return Py_NewRef(slot->tags);
    PyObject *tags = new_tags(e);
    if (!tags) return NULL;
    char *copy = PyMem_Realloc(slot->key, len ? len : 1);
    if (!copy) return tags; /* not shared, still right */
    memcpy(copy, key, len);
    slot->key = copy;
    slot->hash = h;
    slot->len = len;
    Py_XSETREF(slot->tags, Py_NewRef(tags));
    return tags;
}

/* Appends (name, kind, unit, tags, timestamp, value, last) to points; steals nothing. */
static int add_point(PyObject *points, PyObject *name, PyObject *kind, PyObject *unit, PyObject *tags,
                     int64_t timestamp, PyObject *value, PyObject *last) {
    PyObject *ts = PyLong_FromLongLong(timestamp);
    if (!ts) return 0;
    PyObject *point = PyTuple_Pack(7, name, kind, unit, tags, ts, value, last);
    Py_DECREF(ts);
    if (!point) return 0;
    PyObject_GC_UnTrack(point); /* see untracked() in _aggregate.c */
    int failed = PyList_Append(points, point);
    Py_DECREF(point);
    return !failed;
}

/* A message's fields by number (1..3), each at most once and of the wire type asked. */
static int read_fields(bytes_t m, const uint32_t wires[4], field_t out[4]) {
    field_t f;
    uint32_t seen = 0;
    ptr p = m.data, end = m.data + m.len;
    for (int i = 1; i < 4; i++) {
        out[i].value = 0;
        out[i].len = 0;
        out[i].data = p;
    }
    while (p < end) {
        if (!(p = next_field(p, end, &f)) || f.number < 1 || f.number > 3 || f.wire != wires[f.number]) return 0;
        ONCE(seen, f.number);
        out[f.number] = f;
    }
    return 1;
}

static const uint32_t LOG_WIRES[4] = {0, LEN, VARINT, 99};          /* payload, type */
static const uint32_t COUNTER_WIRES[4] = {0, LEN, VARINT, VARINT};  /* name, delta, total */
static const uint32_t TIMER_WIRES[4] = {0, LEN, VARINT, VARINT};    /* name, start, stop */
static const uint32_t EVENT_WIRES[4] = {0, LEN, LEN, 99};           /* title, body */
static const uint32_t ENTRY_WIRES[4] = {0, LEN, LEN, 99};           /* key, value */
static const uint32_t READING_WIRES[4] = {0, LEN, FIXED64, 99};     /* unit, value */

static int add_gauge(PyObject *points, bytes_t gauge, PyObject *tags, int64_t timestamp) {
    bytes_t names[MAX_METRICS];
    int n = 0;
    field_t f, entry[4], reading[4];
    ptr p = gauge.data, end = gauge.data + gauge.len;
    while (p < end) {
        if (!(p = next_field(p, end, &f)) || f.number != 1 || f.wire != LEN || n == MAX_METRICS) return 0;
        bytes_t e = {f.data, f.len};
        if (!read_fields(e, ENTRY_WIRES, entry)) return 0;
        bytes_t name = {entry[1].data, entry[1].len};
        for (int i = 0; i < n; i++) /* a name twice: protobuf keeps the last, in its own order */
            if (names[i].len == name.len && !memcmp(names[i].data, name.data, name.len)) return 0;
        names[n++] = name;
        bytes_t r = {entry[2].data, entry[2].len};
        if (!read_fields(r, READING_WIRES, reading)) return 0;
        double value;
        memcpy(&value, &reading[2].value, 8);
        bytes_t unit_bytes = {reading[1].data, reading[1].len};
        PyObject *pyname = name_text(name), *unit = pyname ? name_text(unit_bytes) : NULL;
        PyObject *v = unit ? PyFloat_FromDouble(value) : NULL;
        int ok = v && add_point(points, pyname, GAUGE, unit, tags, timestamp, v, v);
        Py_XDECREF(pyname);
        Py_XDECREF(unit);
        Py_XDECREF(v);
        if (!ok) return 0;
    }
    return 1;
}

/* Appends a [access_key, ts, source, instance, a, b, tags, partition, offset, index] row. */
static int add_row(PyObject *rows, PyObject *access_key, const envelope_t *e, PyObject *a, PyObject *b,
                   PyObject *tags, PyObject *partition, PyObject *offset, Py_ssize_t index) {
    PyObject *row = PyList_New(10);
    if (!row) return 0;
    PyObject_GC_UnTrack(row); /* see untracked() in _aggregate.c */
    PyObject *borrowed[10] = {access_key, NULL, NULL, NULL, a, b, tags, partition, offset, NULL};
    for (int i = 0; i < 10; i++) {
        PyObject *item;
        switch (i) {
        case 1: item = PyLong_FromLongLong(e->timestamp); break;
        case 2: item = name_text(e->source); break;
        case 3: item = name_text(e->instance); break;
        case 9: item = PyLong_FromSsize_t(index); break;
        default: item = Py_NewRef(borrowed[i]); break;
        }
        if (!item) {
            Py_DECREF(row); /* the items set so far go with it */
            return 0;
        }
        PyList_SET_ITEM(row, i, item);
    }
    int ok = PyList_Append(rows, row) == 0;
    Py_DECREF(row);
    return ok;
}

/* One envelope into logs, events or points; 0 with or without an exception: the slow path. */
static int add_envelope(const envelope_t *e, PyObject *out[3], PyObject *access_key, PyObject *partition,
                        PyObject *offset, Py_ssize_t index, const window_t *w) {
    field_t m[4];
    int64_t took = 0; /* a timer's: forwards, within the window's bound and exact as a double */
    if (e->kind == 13 && (!read_fields(e->message, TIMER_WIRES, m) ||
                          __builtin_sub_overflow((int64_t)m[3].value, (int64_t)m[2].value, &took) || took < 0 ||
                          took > w->max_duration || took > (1ll << 53)))
        return 0;
    int64_t stored_at = e->kind == 13 && m[3].value ? (int64_t)m[3].value : e->timestamp;
    if (!within(stored_at, e->kind == 10 || e->kind == 14 ? w->raw_from : w->metric_from, w)) return 0;
    PyObject *tags = tags_of(e);
    if (!tags) return 0;
    int ok = 0;
    PyObject *a = NULL, *b = NULL, *c = NULL;
    switch (e->kind) {
    case 10: /* log */
        if (!read_fields(e->message, LOG_WIRES, m)) break;
        a = (int32_t)m[2].value == 1 ? ERR : OUT;
        Py_INCREF(a);
        b = PyUnicode_DecodeUTF8((const char *)m[1].data, (Py_ssize_t)m[1].len, "replace");
        ok = b && add_row(out[0], access_key, e, a, b, tags, partition, offset, index);
        break;
    case 11: /* counter */
        if (!read_fields(e->message, COUNTER_WIRES, m)) break;
        a = name_text((bytes_t){m[1].data, m[1].len});
        /* uint64 to double rounds to nearest, ties to even, as Python's float(int) does */
        b = a ? PyFloat_FromDouble((double)m[2].value) : NULL;
        c = b ? PyFloat_FromDouble((double)m[3].value) : NULL;
        ok = c && add_point(out[2], a, COUNTER, EMPTY, tags, e->timestamp, b, c);
        break;
    case 12: /* gauge */
        ok = add_gauge(out[2], e->message, tags, e->timestamp);
        break;
    case 13: { /* timer, read above */
        int64_t stop = (int64_t)m[3].value;
        a = name_text((bytes_t){m[1].data, m[1].len});
        b = a ? PyFloat_FromDouble((double)took / 1e6) : NULL;
        ok = b && add_point(out[2], a, TIMER, MS, tags, stop ? stop : e->timestamp, b, b);
        break;
    }
    case 14: /* event */
        if (!read_fields(e->message, EVENT_WIRES, m)) break;
        a = text((bytes_t){m[1].data, m[1].len});
        b = a ? text((bytes_t){m[2].data, m[2].len}) : NULL;
        ok = b && add_row(out[1], access_key, e, a, b, tags, partition, offset, index);
        break;
    }
    Py_XDECREF(a);
    Py_XDECREF(b);
    Py_XDECREF(c);
    Py_DECREF(tags);
    return ok;
}

PyDoc_STRVAR(decode_doc,
"decode(value, access_key, partition, offset, window=None, /) -> tuple[list, list, list] | None\n\n"
"The log rows, event rows and metric points of the serialized EnvelopeBatch ``value``, as\n"
"streams/decode.py makes them; None when it holds anything this decoder leaves to protobuf,\n"
"a time outside ``window`` (a time_bounds.Window; None: no bounds) included.");

static PyObject *decode(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs < 4 || nargs > 5 || !PyBytes_Check(args[0]) || !PyUnicode_Check(args[1]) || !PyLong_Check(args[2]) ||
        !PyLong_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError,
                        "decode(value: bytes, access_key: str, partition: int, offset: int, window: Window | None)");
        return NULL;
    }
    window_t w = UNBOUNDED_WINDOW;
    if (nargs == 5 && args[4] != Py_None && !window_arg(args[4], &w, "decode")) return NULL;
    ptr p = (ptr)PyBytes_AS_STRING(args[0]);
    ptr end = p + PyBytes_GET_SIZE(args[0]);
    PyObject *out[3] = {PyList_New(0), PyList_New(0), PyList_New(0)};
    envelope_t e;
    field_t f;
    Py_ssize_t index = 0;
    if (!out[0] || !out[1] || !out[2]) goto fail;
    while (p < end) {
        if (!(p = next_field(p, end, &f)) || f.number != 1 || f.wire != LEN) goto doubt;
        if (!read_envelope(f.data, f.data + f.len, &e)) goto doubt;
        if (!add_envelope(&e, out, args[1], args[2], args[3], index++, &w)) {
            if (PyErr_Occurred() && !PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) goto fail;
            goto doubt;
        }
    }
    return Py_BuildValue("(NNN)", out[0], out[1], out[2]);
doubt:
    PyErr_Clear();
    for (int i = 0; i < 3; i++) Py_XDECREF(out[i]);
    Py_RETURN_NONE;
fail:
    for (int i = 0; i < 3; i++) Py_XDECREF(out[i]);
    return NULL;
}

static PyMethodDef methods[] = {
    {"decode", (PyCFunction)(void (*)(void))decode, METH_FASTCALL, decode_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_decode", "EnvelopeBatch records decoded from their wire bytes: the worker's fast path.",
    -1, methods,
};

PyMODINIT_FUNC PyInit__decode(void) {
    if (!(COUNTER = PyUnicode_InternFromString("counter")) || !(GAUGE = PyUnicode_InternFromString("gauge")) ||
        !(TIMER = PyUnicode_InternFromString("timer")) || !(EMPTY = PyUnicode_InternFromString("")) ||
        !(MS = PyUnicode_InternFromString("ms")) || !(OUT = PyUnicode_InternFromString("OUT")) ||
        !(ERR = PyUnicode_InternFromString("ERR")))
        return NULL;
    return PyModule_Create(&module);
}
