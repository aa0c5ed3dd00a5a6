/* The gateway's fast path: a serialized EnvelopeBatch checked at the wire level, in one pass.
 *
 * scan() answers "are these bytes, exactly as received, a batch of valid envelopes that need
 * nothing stamped?" and, when they are, how many and how large. Anything else returns None:
 * a wire-format doubt (unknown or repeated field, a group, a wrong wire type, bad UTF-8), an
 * envelope to stamp, or an invalid one. The caller then decodes the batch with protobuf and takes
 * the one-by-one path, which alone words errors. So this code never decides that a batch is
 * refused: only that it is certainly accepted. Its rules are those of validate.py's one-by-one
 * path; tests/unit/ingress/test_scan.py checks that both agree on generated batches.
 *
 * source_ids() reads each envelope's source_id (field 2), for keys spread over several shards.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "protowire.h"
#include "time_window.h"

typedef struct {
    window_t w;             /* the times accepted */
    uint64_t max_envelope;  /* bytes of one envelope as received */
    uint64_t max_batch;     /* envelopes of one request */
    uint64_t max_tags;
    uint64_t max_key;       /* bytes of a tag key */
    uint64_t max_value;     /* bytes of a tag value */
} limits_t;

/* What a field must be: its wire type follows from its rule. */
typedef enum {
    UNKNOWN = 0, /* not in the schema: a doubt */
    ANY_VARINT,  /* uint64, enums */
    FROM,        /* int64 in (0, horizon], the start of an interval */
    TO,          /* int64 in (0, horizon], its end: not before FROM, at most max_duration after */
    TIMESTAMP,   /* int64 in (0, horizon], and not before the bound of the envelope's kind */
    FINITE,      /* double, not NaN or infinite */
    ANY_BYTES,
    TEXT,        /* UTF-8 */
    ID16,        /* 16 bytes, not all zero */
    ID8,         /* 8 bytes, not all zero */
    ID8_OR_NONE, /* 8 bytes or empty */
    TAG_KEY,     /* UTF-8 of at most max_tag_key_bytes */
    TAG_VALUE,   /* UTF-8 of at most max_tag_value_bytes */
    MESSAGE,     /* checked by its own schema */
    TAG,         /* a MESSAGE counted against max_tags */
} rule_t;

typedef struct schema schema_t;
typedef struct {
    rule_t rule;
    const schema_t *message;
} field_rule_t;

#define MAX_FIELD 15
#define BIT(n) (1u << (n))
/* Which time of a message is stored, and so bounded in the past (time_bounds.py). */
typedef enum { NO_PAST = 0, RAW_PAST, METRIC_PAST } past_t;

struct schema {
    field_rule_t fields[MAX_FIELD + 1]; /* by field number */
    uint32_t repeated;                  /* fields that may come more than once */
    uint32_t required;                  /* fields that must be set, strings and bytes non-empty */
    uint32_t oneof;                     /* exactly one of these must be set */
    past_t from_past, to_past;          /* the past bound of its FROM and TO fields */
    past_t past_of[MAX_FIELD + 1];      /* ENVELOPE: its timestamp's past bound, by message field */
};

/* envelope.proto, with validate.py's rules. */
static const schema_t TAG_ENTRY = {{[1] = {TAG_KEY}, [2] = {TAG_VALUE}}};
static const schema_t LOG = {{[1] = {ANY_BYTES}, [2] = {ANY_VARINT}}};
static const schema_t COUNTER = {{[1] = {TEXT}, [2] = {ANY_VARINT}, [3] = {ANY_VARINT}}, .required = BIT(1)};
static const schema_t GAUGE_VALUE = {{[1] = {TEXT}, [2] = {FINITE}}};
static const schema_t GAUGE_ENTRY = {{[1] = {TEXT}, [2] = {MESSAGE, &GAUGE_VALUE}}, .required = BIT(1)};
static const schema_t GAUGE = {{[1] = {MESSAGE, &GAUGE_ENTRY}}, .repeated = BIT(1), .required = BIT(1)};
static const schema_t TIMER = {
    {[1] = {TEXT}, [2] = {FROM}, [3] = {TO}}, .required = BIT(1) | BIT(2) | BIT(3), .to_past = METRIC_PAST,
};
static const schema_t EVENT = {{[1] = {TEXT}, [2] = {TEXT}}};
static const schema_t SPAN = {
    {[1] = {ID16}, [2] = {ID8}, [3] = {ID8_OR_NONE}, [4] = {TEXT}, [5] = {ANY_VARINT}, [6] = {FROM}, [7] = {TO},
     [8] = {ANY_VARINT}, [9] = {TEXT}},
    .required = BIT(1) | BIT(2) | BIT(4) | BIT(6) | BIT(7),
    .from_past = RAW_PAST,
};
static const schema_t ENVELOPE = {
    {[1] = {TIMESTAMP}, [2] = {TEXT}, [3] = {TEXT}, [4] = {TAG, &TAG_ENTRY},
     [10] = {MESSAGE, &LOG}, [11] = {MESSAGE, &COUNTER}, [12] = {MESSAGE, &GAUGE},
     [13] = {MESSAGE, &TIMER}, [14] = {MESSAGE, &EVENT}, [15] = {MESSAGE, &SPAN}},
    .repeated = BIT(4),
    .required = BIT(1) | BIT(2), /* a timestamp or source to stamp is the slow path's work */
    .oneof = BIT(10) | BIT(11) | BIT(12) | BIT(13) | BIT(14) | BIT(15),
    .past_of = {[10] = RAW_PAST, [11] = METRIC_PAST, [12] = METRIC_PAST, [13] = METRIC_PAST, [14] = RAW_PAST,
                [15] = RAW_PAST},
};

static int in_past_bound(int64_t t, past_t past, const limits_t *L) {
    return past == RAW_PAST ? t >= L->w.raw_from : past == METRIC_PAST ? t >= L->w.metric_from : 1;
}

static int nonzero(ptr s, uint64_t n) {
    for (uint64_t i = 0; i < n; i++)
        if (s[i]) return 1;
    return 0;
}

static const uint8_t WIRE_OF[] = {
    [ANY_VARINT] = VARINT, [FROM] = VARINT, [TO] = VARINT, [TIMESTAMP] = VARINT, [FINITE] = FIXED64,
    [ANY_BYTES] = LEN, [TEXT] = LEN, [ID16] = LEN, [ID8] = LEN, [ID8_OR_NONE] = LEN, [TAG_KEY] = LEN,
    [TAG_VALUE] = LEN, [MESSAGE] = LEN, [TAG] = LEN,
};

/* Whether the message at [p, end) certainly passes: every field known, of its wire type, once
 * (protobuf's merge rules would decide a repeated one: a doubt), and within its rule. */
static int check(const schema_t *m, ptr p, ptr end, const limits_t *L) {
    field_t f;
    uint32_t seen = 0, set = 0;
    uint64_t tags = 0;
    int64_t from = 0, to = 0, timestamp = 0;
    uint32_t kind = 0; /* the field number of the oneof member set */
    while (p < end) {
        if (!(p = next_field(p, end, &f)) || f.number > MAX_FIELD) return 0;
        const field_rule_t *r = &m->fields[f.number];
        uint32_t bit = BIT(f.number);
        if (r->rule == UNKNOWN || f.wire != WIRE_OF[r->rule]) return 0;
        if (seen & bit & ~m->repeated) return 0;
        if ((bit & m->oneof) && (seen & m->oneof)) return 0;
        seen |= bit;
        if (bit & m->oneof) kind = f.number;
        switch (r->rule) {
        case FROM:
        case TO:
        case TIMESTAMP: {
            int64_t t = (int64_t)f.value;
            if (t <= 0 || t > L->w.until) return 0;
            *(r->rule == FROM ? &from : r->rule == TO ? &to : &timestamp) = t;
            break;
        }
        case FINITE:
            if (((f.value >> 52) & 0x7FF) == 0x7FF) return 0;
            break;
        case TEXT:
            if (!utf8(f.data, f.len)) return 0;
            break;
        case ID16:
            if (f.len != 16 || !nonzero(f.data, 16)) return 0;
            break;
        case ID8:
            if (f.len != 8 || !nonzero(f.data, 8)) return 0;
            break;
        case ID8_OR_NONE:
            if (f.len != 0 && f.len != 8) return 0;
            break;
        case TAG_KEY:
            if (f.len > L->max_key || !utf8(f.data, f.len)) return 0;
            break;
        case TAG_VALUE:
            if (f.len > L->max_value || !utf8(f.data, f.len)) return 0;
            break;
        case TAG:
            if (++tags > L->max_tags) return 0;
            /* fall through */
        case MESSAGE:
            if (!check(r->message, f.data, f.data + f.len, L)) return 0;
            set |= bit; /* a message is set even when empty */
            continue;
        default:
            break;
        }
        if (f.wire != LEN || f.len) set |= bit;
    }
    return (set & m->required) == m->required && (!m->oneof || (seen & m->oneof)) && to >= from &&
           to - from <= L->w.max_duration && in_past_bound(from, m->from_past, L) && in_past_bound(to, m->to_past, L) &&
           in_past_bound(timestamp, m->past_of[kind], L);
}

static int uint_arg(PyObject *arg, uint64_t *out, const char *name) {
    long long v = PyLong_AsLongLong(arg);
    if (v == -1 && PyErr_Occurred()) return 0;
    if (v < 0) {
        PyErr_Format(PyExc_ValueError, "%s must be >= 0, got %lld", name, v);
        return 0;
    }
    *out = (uint64_t)v;
    return 1;
}

PyDoc_STRVAR(scan_doc,
"scan(data, window, max_envelope_bytes, max_batch_envelopes, max_tags, max_tag_key_bytes,\n"
"     max_tag_value_bytes, /) -> tuple[int, int, bool] | None\n\n"
"When every envelope of the serialized EnvelopeBatch ``data`` is valid as it is (every time within\n"
"``window``, a time_bounds.Window; source_id set; one message; within the limits) and ``data`` holds\n"
"nothing else:\n"
"how many there are, their total size, and whether ``data`` frames each behind the shortest tag\n"
"and length (as frames.frame_records does). None when any is not, or when in any doubt.");

static int varint_size(uint64_t v) {
    int n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static PyObject *scan(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 7) {
        PyErr_Format(PyExc_TypeError, "scan() takes 7 arguments (%zd given)", nargs);
        return NULL;
    }
    if (!PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "scan(): data must be bytes");
        return NULL;
    }
    limits_t L;
    if (!window_arg(args[1], &L.w, "scan")) return NULL;
    if (!uint_arg(args[2], &L.max_envelope, "max_envelope_bytes") || !uint_arg(args[3], &L.max_batch, "max_batch_envelopes") ||
        !uint_arg(args[4], &L.max_tags, "max_tags") || !uint_arg(args[5], &L.max_key, "max_tag_key_bytes") ||
        !uint_arg(args[6], &L.max_value, "max_tag_value_bytes"))
        return NULL;

    ptr p = (ptr)PyBytes_AS_STRING(args[0]);
    ptr end = p + PyBytes_GET_SIZE(args[0]);
    field_t f;
    uint64_t count = 0, nbytes = 0;
    int canonical = 1;
    while (p < end) {
        ptr head = p;
        if (!(p = next_field(p, end, &f)) || f.number != 1 || f.wire != LEN ||
            count >= L.max_batch || f.len > L.max_envelope ||
            !check(&ENVELOPE, f.data, f.data + f.len, &L))
            Py_RETURN_NONE;
        count++;
        nbytes += f.len;
        canonical &= f.data - head == 1 + varint_size(f.len);
    }
    if (count == 0) Py_RETURN_NONE; /* nothing to forward: the slow path answers */
    return Py_BuildValue("(KKO)", (unsigned long long)count, (unsigned long long)nbytes, canonical ? Py_True : Py_False);
}

PyDoc_STRVAR(source_ids_doc,
"source_ids(envelopes, /) -> list[str]\n\n"
"The source_id of each serialized envelope (its last field 2, as protobuf reads it; '' when it\n"
"has none). The envelopes must have passed scan().");

static PyObject *source_ids(PyObject *module, PyObject *envelopes) {
    (void)module;
    PyObject *seq = PySequence_Fast(envelopes, "source_ids(): expected a sequence of bytes");
    if (!seq) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject *out = PyList_New(n);
    if (!out) goto fail;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        if (!PyBytes_Check(item)) {
            PyErr_SetString(PyExc_TypeError, "source_ids(): every envelope must be bytes");
            goto fail;
        }
        ptr p = (ptr)PyBytes_AS_STRING(item), end = p + PyBytes_GET_SIZE(item);
        ptr source = p;
        uint64_t len = 0;
        field_t f;
        while (p < end) {
            if (!(p = next_field(p, end, &f))) {
                PyErr_SetString(PyExc_ValueError, "source_ids(): not a serialized envelope");
                goto fail;
            }
            if (f.number == 2 && f.wire == LEN) {
                source = f.data;
                len = f.len;
            }
        }
        PyObject *s = PyUnicode_DecodeUTF8((const char *)source, (Py_ssize_t)len, "strict");
        if (!s) goto fail;
        PyList_SET_ITEM(out, i, s);
    }
    Py_DECREF(seq);
    return out;
fail:
    Py_XDECREF(out);
    Py_DECREF(seq);
    return NULL;
}

static PyMethodDef methods[] = {
    {"scan", (PyCFunction)(void (*)(void))scan, METH_FASTCALL, scan_doc},
    {"source_ids", source_ids, METH_O, source_ids_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_scan",
    "EnvelopeBatch bytes checked at the wire level: the gateway's fast path.", -1, methods,
};

PyMODINIT_FUNC PyInit__scan(void) { return PyModule_Create(&module); }
