/* Protocol-buffer wire format, read without decoding: varints, fields, UTF-8. Shared by the
 * gateway's check of request batches (ingress/_scan.c) and the worker's decoder of records
 * (streams/_decode.c). A reader returns NULL where the bytes are not what it reads. */
#ifndef SLUICE_PROTOWIRE_H
#define SLUICE_PROTOWIRE_H

#include <stdint.h>
#include <string.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "fixed64 fields are read as little-endian host integers"
#endif

typedef const uint8_t *ptr;

typedef struct {
    uint32_t number;
    uint32_t wire;
    uint64_t value;  /* varint and fixed fields */
    ptr data;        /* length-delimited fields */
    uint64_t len;
} field_t;

enum { VARINT = 0, FIXED64 = 1, LEN = 2, FIXED32 = 5 };

static inline ptr read_varint(ptr p, ptr end, uint64_t *out) {
    if (p < end && *p < 0x80) { /* most tags and lengths */
        *out = *p;
        return p + 1;
    }
    uint64_t v = 0;
    for (int shift = 0; shift < 70 && p < end; shift += 7) {
        uint8_t b = *p++;
        v |= (uint64_t)(b & 0x7F) << shift;
        if (!(b & 0x80)) {
            *out = v;
            return p;
        }
    }
    return NULL;
}

/* The next field at p, or NULL when the bytes are not one (groups count as doubt too). */
static inline ptr next_field(ptr p, ptr end, field_t *f) {
    uint64_t tag;
    if (!(p = read_varint(p, end, &tag)) || tag > 0xFFFFFFFFu || (tag >> 3) == 0) return NULL;
    f->number = (uint32_t)(tag >> 3);
    f->wire = (uint32_t)(tag & 7);
    switch (f->wire) {
    case VARINT:
        return read_varint(p, end, &f->value);
    case FIXED64:
        if (end - p < 8) return NULL;
        memcpy(&f->value, p, 8);
        return p + 8;
    case LEN:
        if (!(p = read_varint(p, end, &f->len)) || f->len > (uint64_t)(end - p)) return NULL;
        f->data = p;
        return p + f->len;
    case FIXED32: {
        uint32_t v;
        if (end - p < 4) return NULL;
        memcpy(&v, p, 4);
        f->value = v;
        return p + 4;
    }
    default:
        return NULL;
    }
}

/* Well-formed UTF-8 (no overlong forms, no surrogates, nothing past U+10FFFF), as protobuf
 * requires of string fields. */
static inline int utf8(ptr s, uint64_t n) {
    ptr end = s + n;
    uint8_t any = 0;
    for (uint64_t i = 0; i < n; i++) any |= s[i];
    if (!(any & 0x80)) return 1; /* ASCII: nearly every string */
    while (s < end) {
        uint8_t c = *s;
        if (c < 0x80) {
            s++;
        } else if (c >= 0xC2 && c <= 0xDF) {
            if (end - s < 2 || (s[1] & 0xC0) != 0x80) return 0;
            s += 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            if (end - s < 3 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80) return 0;
            if (c == 0xE0 && s[1] < 0xA0) return 0; /* overlong */
            if (c == 0xED && s[1] > 0x9F) return 0; /* surrogate */
            s += 3;
        } else if (c >= 0xF0 && c <= 0xF4) {
            if (end - s < 4 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80) return 0;
            if (c == 0xF0 && s[1] < 0x90) return 0; /* overlong */
            if (c == 0xF4 && s[1] > 0x8F) return 0; /* past U+10FFFF */
            s += 4;
        } else {
            return 0;
        }
    }
    return 1;
}

#endif
