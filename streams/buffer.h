/* A growable byte buffer for the C encoders (_native.c, _jsonl.c); errors set a Python
 * exception and return -1. */
#ifndef SLUICE_BUFFER_H
#define SLUICE_BUFFER_H

#include <Python.h>
#include <string.h>

typedef struct {
    char *data;
    size_t len, cap;
} Buf;

static inline int grow(Buf *b, size_t more) {
    if (b->len + more <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 1 << 16;
    while (cap < b->len + more) cap *= 2;
    char *data = PyMem_Realloc(b->data, cap);
    if (!data) {
        PyErr_NoMemory();
        return -1;
    }
    b->data = data;
    b->cap = cap;
    return 0;
}

static inline int put(Buf *b, const void *p, size_t n) {
    if (grow(b, n)) return -1;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

#endif
